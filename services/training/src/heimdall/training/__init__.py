"""Training: run configuration, the LightningModule and the run that ties data, model and export."""
