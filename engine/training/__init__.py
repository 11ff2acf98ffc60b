"""Making models: the stem dataset (`dataset`), the CAE, conditioner and diffusion trainers
(`cae`, `conditioner`, `ldm`) and their evaluations (`cae_eval`, `evaluate`)."""
