"""Actions: one module per verb. Entry points parse input and call these."""
