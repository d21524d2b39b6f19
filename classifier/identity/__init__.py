"""Identity evidence: what a device says about itself, read with public knowledge and a learned model."""
