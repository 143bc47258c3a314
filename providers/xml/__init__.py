"""libvirt XML, with ElementTree only: one module per libvirt object (domain, storage, network),
the guest's fields in XML, firmware, and the merge that keeps what virtfleet does not manage.  Pure."""
