"""Config text the unit tests share, shaped like docs/config.md's example."""

# what every config has before its hosts: where state, the store and the passphrase are
HEAD = """
state_dir = "state"
[store]
path = "store"
[passphrase]
file = "pass"
"""
