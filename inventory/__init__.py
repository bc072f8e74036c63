"""Sites, hosts, tenants (counties), VMs, networks and images: the source of truth, declared in YAML and stored with SQLAlchemy."""
