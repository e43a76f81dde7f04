"""A tiny user-model package the model-registry tests load by `package.module:factory` path."""
