"""LightningModules: masked-LM pretraining, region classification/regression, variant scoring."""
