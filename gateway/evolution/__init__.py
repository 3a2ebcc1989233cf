"""Schema versions, their compatibility rules, and quarantine read and replay."""
