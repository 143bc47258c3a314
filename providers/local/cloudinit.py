"""cloud-init NoCloud seeds: a guest's `cloudInit` settings checked and rendered into seed files, and the
seed ISO (labelled `cidata`, with Rock Ridge and Joliet names) built locally with pycdlib.  Pure.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import pycdlib
import yaml

from providers.model.errors import ConfigError

KEYS = {"userData", "metaData", "networkConfig", "sshAuthorizedKeys", "hostname"}
MAX_SEED = 64 << 10  # the seed files together (as Azure's limit): cloud-init data, not a payload channel
# the first line of user-data that cloud-init recognises as something other than cloud-config
OTHER_HEADERS = ("#!", "#include", "#cloud-boothook", "#part-handler", "#cloud-config-archive",
                 "#cloud-config-jsonp", "Content-Type:", "## template: jinja")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
HOSTNAME_MAX = 63


@dataclass(frozen=True)
class Seed:
    """The seed's three files as text; `digest` names the seed's content (and its volume on the host)."""

    user_data: str
    meta_data: str
    network_config: str = ""

    def files(self) -> dict[str, bytes]:
        out = {"user-data": self.user_data.encode(), "meta-data": self.meta_data.encode()}
        if self.network_config:
            out["network-config"] = self.network_config.encode()
        return out

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, data in sorted(self.files().items()):
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()

    @property
    def instance_id(self) -> str:
        return str(yaml.safe_load(self.meta_data)["instance-id"])

    def to_props(self) -> dict[str, str]:
        return {"userData": self.user_data, "metaData": self.meta_data, "networkConfig": self.network_config}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> Seed:
        seed = cls(str(p.get("userData") or ""), str(p.get("metaData") or ""), str(p.get("networkConfig") or ""))
        try:
            meta = yaml.safe_load(seed.meta_data)
        except yaml.YAMLError:
            meta = None
        if not isinstance(meta, dict) or "instance-id" not in meta:
            raise ConfigError("cloudInit.metaData", "is not a meta-data mapping with an instance-id")
        return seed


def _yaml(key: str, value: Any, what: str) -> dict[str, Any]:
    """A mapping given as a mapping or as YAML text; YAML errors name the line."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ConfigError(key, f"{what} must be a mapping or a YAML string, got {type(value).__name__}")
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(key, f"{what} is not valid YAML{where}: {problem}",
                          "Fix the YAML (indentation, a ':' inside an unquoted value), or write it as a mapping") \
            from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(key, f"{what} must be a YAML mapping, got {type(loaded).__name__}")
    return loaded


def _public_key(key: str, value: Any) -> str:
    parts = value.split() if isinstance(value, str) else []
    fix = "Give the public key line as in ~/.ssh/id_ed25519.pub, e.g. \"ssh-ed25519 AAAA... me@laptop\""
    if len(parts) < 2 or parts[0] not in KEY_TYPES or "\n" in value.strip():
        raise ConfigError(key, f"{str(value)[:40]!r} is not an OpenSSH public key", fix)
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ConfigError(key, "the key's base64 part does not decode", fix) from None
    if "PRIVATE KEY" in value:
        raise ConfigError(key, "this is a private key", "Give the public key (the .pub file)")
    return value.strip()


def _hostname(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > HOSTNAME_MAX or \
            not all(c.isascii() and (c.isalnum() or c == "-") for c in value) or value[0] == "-" or value[-1] == "-":
        raise ConfigError(key, f"{value!r} is not a host name",
                          f"Use letters, digits and '-' (at most {HOSTNAME_MAX}), e.g. web-1")
    return value


def _user_data(key: str, conf: dict[str, Any], keys: list[str]) -> str:
    raw = conf.get("userData")
    if isinstance(raw, str) and raw.lstrip().startswith(OTHER_HEADERS):
        if keys:
            raise ConfigError(f"{key}.sshAuthorizedKeys", "can only be merged into #cloud-config user-data, and "
                              "userData is a script or another format", "Put the keys in your user-data yourself")
        return raw
    if isinstance(raw, str) and raw.strip() and not raw.lstrip().startswith("#cloud-config"):
        raise ConfigError(f"{key}.userData", "a user-data string must start with '#cloud-config' (or '#!' for a "
                          "script)", "Add the '#cloud-config' line, or write userData as a YAML mapping")
    cloud_config = dict(_yaml(f"{key}.userData", raw if raw is not None else {}, "userData"))
    host_keys = cloud_config.get("ssh_keys")
    if isinstance(host_keys, dict):  # `pulumi config set` drops a value's final newline; OpenSSH then refuses
        cloud_config["ssh_keys"] = {k: f"{v}\n" if k.endswith("_private") and isinstance(v, str) and
                                    not v.endswith("\n") else v for k, v in host_keys.items()}
    if keys:
        have = cloud_config.get("ssh_authorized_keys") or []
        if not isinstance(have, list):
            raise ConfigError(f"{key}.userData", "ssh_authorized_keys must be a list")
        cloud_config["ssh_authorized_keys"] = [*have, *[k for k in keys if k not in have]]
    return "#cloud-config\n" + yaml.safe_dump(cloud_config, sort_keys=False, default_flow_style=False) \
        if cloud_config else "#cloud-config\n"


def _network_config(key: str, raw: Any) -> str:
    if raw in (None, ""):
        return ""
    net = _yaml(key, raw, "networkConfig")
    inner = net.get("network", net) if isinstance(net.get("network"), dict) else net
    if inner.get("version") not in (1, 2):
        raise ConfigError(key, f"networkConfig must say `version: 1` or `version: 2`, got {inner.get('version')!r}",
                          "Write cloud-init network config v2 (netplan style), e.g. {version: 2, ethernets: ...}")
    return yaml.safe_dump(net, sort_keys=False, default_flow_style=False)


def render(key: str, conf: Any, guest_name: str) -> Seed:
    """The seed for a guest's `cloudInit` mapping (`key` names it in errors).  The instance-id changes with
    the content, so cloud-init runs again on a changed seed; a metaData instance-id given by the user wins."""
    if not isinstance(conf, dict):
        raise ConfigError(key, f"must be a mapping, got {type(conf).__name__}",
                          "e.g. cloudInit: {sshAuthorizedKeys: [\"ssh-ed25519 AAAA...\"]}")
    unknown = sorted(set(conf) - KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key", f"Known keys: {', '.join(sorted(KEYS))}")
    raw_keys = conf.get("sshAuthorizedKeys") or []
    if not isinstance(raw_keys, list):
        raise ConfigError(f"{key}.sshAuthorizedKeys", "must be a list of public keys")
    keys = [_public_key(f"{key}.sshAuthorizedKeys[{n}]", k) for n, k in enumerate(raw_keys)]
    user_data = _user_data(key, conf, keys)
    network = _network_config(f"{key}.networkConfig", conf.get("networkConfig"))
    meta = dict(_yaml(f"{key}.metaData", conf.get("metaData") or {}, "metaData"))
    meta.setdefault("local-hostname", _hostname(f"{key}.hostname", conf.get("hostname", guest_name)))
    if "instance-id" not in meta:
        draft = Seed(user_data, yaml.safe_dump(meta, sort_keys=True), network)
        meta = {"instance-id": f"{guest_name}-{draft.digest[:12]}", **meta}
    seed = Seed(user_data, yaml.safe_dump(meta, sort_keys=False, default_flow_style=False), network)
    total = sum(len(b) for b in seed.files().values())
    if total > MAX_SEED:
        raise ConfigError(key, f"the seed is {total} bytes, more than the {MAX_SEED >> 10} KiB limit",
                          "Keep cloud-init data small: fetch large files from the guest (runcmd, packages)")
    return seed


def _iso_name(name: str) -> str:
    return name.upper().replace("-", "_")[:8] + ".;1"


def iso(seed: Seed) -> bytes:
    """The NoCloud seed as an ISO 9660 image labelled `cidata`, with Rock Ridge and Joliet file names."""
    img = pycdlib.PyCdlib()
    img.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for name, data in seed.files().items():
            img.add_fp(io.BytesIO(data), len(data), f"/{_iso_name(name)}", rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        img.write_fp(out)
    finally:
        img.close()
    return out.getvalue()


def volume_name(guest: str, seed: Seed) -> str:
    """The seed's volume in the pool: a new name for new content, so a running guest's seed is never rewritten."""
    return f"{guest}-cidata-{seed.digest[:12]}.iso"
