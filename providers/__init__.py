"""virtfleet dynamic resources: Host, BaseImage, Volume, Network, Guest.

The resource modules here decide and call `providers.remote`, the only code that touches a host; the
pure model (`model`), libvirt XML (`xml`), the operator's side (`local`) and the scripts run on hosts
(`hostside`) are in the folders of those names.
"""
