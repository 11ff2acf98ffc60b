"""The EDM maths of latent diffusion: preconditioning, loss, noise schedules and samplers
(`edm`) and the context's chroma/onset features (`context_features`). Imports only the
networks below it and the ground floor."""
