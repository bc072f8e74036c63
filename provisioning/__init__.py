"""Real VMs through libvirt: golden images, linked clones, prebooted templates, domain XML,
guest configuration, the tenant address."""
