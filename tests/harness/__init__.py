"""Real servers for tests and the demo: OpenSSH droplets, PostgreSQL, MariaDB, SMTP.

Plain Python (no pytest) so `make demo` can reuse it. Every server is started in its
own process group and stopped with it, as root or as a normal user.
"""
