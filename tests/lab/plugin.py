"""pytest plugin that registers the lab fixtures (see tests/lab/)."""
