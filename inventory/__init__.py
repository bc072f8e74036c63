"""Sites, hosts, tenants (counties), VMs, networks and images: the source of truth.

Declared in YAML (declare.py), stored with SQLAlchemy (models.py), migrated with Alembic (db.migrate),
read and updated by the other packages only through queries.py.
"""
