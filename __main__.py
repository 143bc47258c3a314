"""virtfleet: read the stack config -> build the components -> export per-guest outputs."""

import itertools
import os

import pulumi

from components.config import parse, unknown_top_keys
from components.guests import GuestResources
from components.hypervisor import Hypervisor
from providers.local.childenv import private_process
from providers.local.image import load
from providers.local.trace import trace
from providers.model.errors import ConfigError

private_process()  # a build started below cannot read the decrypted config from this process's environment
config = pulumi.Config("virtfleet")
try:
    unknown_top_keys([k.split(":", 1)[1] for k in pulumi.runtime.get_config_env() if k.startswith("virtfleet:")])
    fleet = parse({"images": config.get_object("images"), "hosts": config.get_object("hosts")},
                  lambda key, path, build, build_env: load(key, path, build, os.getcwd(), build_env),
                  pulumi.get_project(), pulumi.get_stack())
except ConfigError as exc:
    raise pulumi.RunError(str(exc)) from None

hypervisors = {h.key: Hypervisor(h, fleet.images) for h in fleet.hosts}
# registered round-robin across hosts: the engine runs the first --parallel ready steps in this order, so
# a large fleet keeps every host's libvirtd busy instead of the first host's only
by_host = [[(h, g) for g in h.guests] for h in fleet.hosts]
guests = [GuestResources(g, hypervisors[h.key])
          for turn in itertools.zip_longest(*by_host) for h, g in filter(None, turn)]
pulumi.export("hosts", {k: {"uri": hv.host.uri, "libvirt": hv.host.libvirtVersion, "kvm": hv.host.kvmUsable}
                        for k, hv in hypervisors.items()})
pulumi.export("guests", {g.key: g.outputs for g in guests})
trace("program registered everything")
