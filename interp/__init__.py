"""mechscope's interpretability package: models, hooks, caching and activation stores."""
