"""Request bodies to validated rows: body reading, framing per format, and compiled schemas."""
