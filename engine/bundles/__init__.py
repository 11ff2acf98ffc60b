"""Model bundles on disk: reading, checking and loading one (`bundle`), and installing,
renaming and removing them in the user's model folder (`model_store`)."""
