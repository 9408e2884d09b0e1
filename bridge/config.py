"""The one typed settings object of the bridge.

Built once in ``bridge.app`` from an optional YAML file (``--config`` or
``CHAT_BRIDGE_CONFIG``) overlaid by ``CHAT_BRIDGE_``-prefixed environment
variables, then passed down. Nothing deeper reads ``os.environ``.

Nested values come from the environment as JSON, e.g.::

    CHAT_BRIDGE_CREDENTIALS='[{"kind":"bearer","token":"t1","users":["tel:+1555*"]}]'
"""

from __future__ import annotations

import difflib
import enum
import importlib
import ipaddress
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.errors import ConfigError

ENV_PREFIX = "CHAT_BRIDGE_"
FILE_SUFFIX = "_FILE"
"""``CHAT_BRIDGE_<NAME>_FILE=/path``: the setting's value is the file's content."""
SECRET: dict[str, Any] = {"secret": True}
"""``json_schema_extra`` marker of a secret ``str`` setting: masked when shown (a URL only in
its password). ``SecretStr`` fields, and fields named ``*password``, ``*passphrase``,
``*secret`` or ``*token``, are masked without it (docs/configuration.md "Secrets")."""
MASK = "**********"


class SignallingProfile(str, enum.Enum):
    """SIP header set toward the IMS core (docs/protocol-mapping.md "Signalling profiles")."""

    CPM = "CPM"
    SIMPLE_IM = "SIMPLE-IM"


def _default_transports() -> list[Literal["udp", "tcp", "tls"]]:
    return ["udp", "tcp"]


class Credential(BaseModel):
    """One REST credential and the user-URI patterns it may act for.

    ``users`` holds canonical user URIs or ``fnmatch`` patterns
    (``tel:+1555*``, ``sip:*@example.com``, ``*``). The first entry is the
    user that ``acr:auth`` resolves to.
    """

    kind: Literal["basic", "bearer"]
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    users: list[str] = Field(min_length=1)

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value():
            raise ValueError("token must not be empty")
        return v


class Settings(BaseSettings):
    """Every setting of the bridge, with its default (the embedded loopback set-up)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    # --- REST -----------------------------------------------------------------
    http_host: str = "127.0.0.1"
    """Address of the REST listener (loopback: authentication may be off)."""
    http_port: int = Field(8080, ge=0, le=65535)
    """Port of the REST listener."""
    server_root: str = ""
    """Scheme, host, port and optional path prefix of every emitted URL (empty:
    ``http://{http_host}:{http_port}``, ``https://`` with ``http_tls_cert_file``, loopback
    for a wildcard host)."""
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request body accepted (413 above)."""
    credentials: list[Credential] = Field(default_factory=list)
    """Basic/Bearer credentials and the users each may act for (none: auth off, loopback only)."""

    # --- store ----------------------------------------------------------------
    database_url: str = Field("sqlite+aiosqlite:///./chat-bridge.db", json_schema_extra=SECRET)
    """SQLAlchemy URL of the store: SQLite file (default) or ``postgresql+asyncpg://`` (the
    ``postgres`` extra); its password is masked wherever the settings are shown."""
    store_commit_interval: float = Field(0.002, ge=0, le=0.05)
    """Least seconds between two group commits of the chat store on a SQLite file: under
    load more chat events share one commit (0: commit as soon as the writer is free)."""

    # --- subscriptions and notifications --------------------------------------
    subscription_default_duration: int = Field(0, ge=0)
    """Granted when the app sends no ``duration`` (0 = until deleted)."""
    subscription_max_duration: int = Field(0, ge=0)
    """Upper bound of a granted ``duration`` (0 = no bound)."""
    notification_max_age: float = Field(24 * 3600.0, gt=0)
    """Seconds a callback notification is retried before it is dropped."""
    notification_backoff_initial: float = Field(1.0, gt=0)
    """First retry delay of a failed callback (seconds; doubles, with jitter)."""
    notification_backoff_max: float = Field(300.0, gt=0)
    """Longest retry delay of a failed callback (seconds)."""
    notification_http_timeout: float = Field(10.0, gt=0)
    """Seconds a callback POST may take before it counts as failed."""
    channel_poll_timeout: float = Field(20.0, gt=0)
    """Seconds a long poll waits before answering an empty ``notificationList``."""
    channel_default_lifetime: int = Field(7200, gt=0)
    """``channelLifetime`` granted when the app asks for none (seconds)."""
    channel_max_lifetime: int = Field(86400, gt=0)
    """Longest ``channelLifetime`` granted (seconds)."""
    channel_min_lifetime: int = Field(300, gt=0)
    """Shortest ``channelLifetime`` granted (seconds): a shorter request is raised to it, so a
    channel outlives the app's first polls."""
    channel_max_notifications: int = Field(100, gt=0)
    """Most notifications one long poll answers with (caps ``maxNotifications``)."""
    # notification delivery worker (rest.delivery)
    notification_poll_interval: float = Field(1.0, gt=0)
    """Seconds between two look-ups of the outbox for rows nobody woke us for."""
    notification_concurrency: int = Field(32, ge=1)
    """Subscriptions whose callbacks are POSTed at the same time (one request each), not
    counting the lanes set aside as slow (``notification_slow_after``)."""
    notification_destination_concurrency: int | None = Field(None, ge=1)
    """Most subscriptions of one destination (host and port of the notifyURL) POSTed to at
    the same time: one tenant's receiver holds at most this share (docs/notify-policy.md).
    Unset: half of ``notification_concurrency`` (at least 1)."""
    notification_slow_after: float = Field(1.0, gt=0)
    """Seconds after which a POST still waiting for its answer stops holding one of the
    ``notification_concurrency`` slots: its lane keeps waiting aside, among the slow lanes."""
    notification_slow_lanes: int = Field(256, ge=0)
    """Most lanes waiting aside on slow receivers at the same time (beyond it a slow lane
    keeps its slot)."""
    notification_breaker_failures: int = Field(5, ge=1)
    """Consecutive failed POSTs (errors, timeouts, non-2xx) to one destination after which
    it is paused: its lanes are skipped until the pause ends."""
    notification_breaker_pause: float = Field(10.0, gt=0)
    """First pause of a failing destination (seconds); doubled while it keeps failing, up to
    ``notification_backoff_max``."""
    notify_allow_loopback: bool | None = None
    """Allow notifyURLs on loopback addresses (127.0.0.0/8, ::1). Unset: allowed only on the
    local development set-up (a loopback REST listener without credentials)."""
    notify_allowed_networks: list[str] = Field(default_factory=list)
    """Addresses and CIDR networks (``10.1.0.0/16``) that notifyURLs may reach although they
    are private-use, link-local, loopback or otherwise not public (docs/notify-policy.md)."""
    notify_allowed_hosts: list[str] = Field(default_factory=list)
    """Host names that notifyURLs may name whatever addresses they resolve to."""

    # --- SIP / MSRP -----------------------------------------------------------
    sip_host: str = "127.0.0.1"
    """Address of the SIP listener."""
    sip_port: int = Field(5070, ge=0, le=65535)
    """Port of the SIP listener (UDP and TCP)."""
    sip_transports: list[Literal["udp", "tcp", "tls"]] = Field(default_factory=_default_transports)
    """SIP transports to listen on (``tls`` on ``sip_tls_port``, docs/tls.md)."""
    sip_outbound_proxy: str | None = None
    """SIP URI of the IMS core entry point, e.g. ``sip:127.0.0.1:5060;transport=tcp``."""
    sip_domain: str = "ims.test"
    """Home domain of the served users (``sip:+1555…@domain``)."""
    msrp_host: str = "127.0.0.1"
    """Address of the MSRP listener (and of our ``a=path``)."""
    msrp_port: int = Field(0, ge=0, le=65535)
    """0 picks a free port."""
    msrp_relay: str | None = None
    """``msrp://host:port;tcp`` of an RFC 4976 relay to AUTH with, or none."""
    sip_message_deadline: float = Field(20.0, gt=0)
    """Seconds a SIP message may take on a TCP connection once its first byte arrived
    (slowloris: the connection is closed). The IMS proxy's connections are exempt."""
    sip_idle_timeout: float = Field(120.0, gt=0)
    """Seconds after which a SIP TCP connection that carried nothing is closed (not the
    IMS proxy's, nor our own loopback in the embedded default)."""
    sip_max_connections: int = Field(2000, ge=0)
    """Most inbound SIP TCP connections at once (0: no cap); more are refused at once."""
    sip_max_connections_per_address: int = Field(256, ge=0)
    """Most inbound SIP TCP connections from one remote address (0: no cap)."""
    msrp_frame_deadline: float = Field(30.0, gt=0)
    """Seconds an MSRP frame may take once its first byte arrived (the connection is closed)."""
    msrp_idle_timeout: float = Field(120.0, gt=0)
    """Seconds after which an inbound MSRP connection with no session bound and no traffic
    is closed (one with sessions stays: the MSRP keep-alive probes it)."""
    msrp_max_connections: int = Field(2000, ge=0)
    """Most inbound MSRP connections at once (0: no cap); more are refused at once."""
    msrp_max_connections_per_address: int = Field(256, ge=0)
    """Most inbound MSRP connections from one remote address (0: no cap)."""
    profile: SignallingProfile = SignallingProfile.CPM
    """SIP header set toward the IMS core: CPM (RCS UP) or SIMPLE-IM (RCS 5.x)."""
    conference_factory_uri: str = "sip:conference-factory@ims.test"
    """Conference factory URI of group chats: the IMS core's, or the bridge's own focus."""
    focus_enabled: bool = True
    """Host conferences: the bridge's own focus answers INVITEs to the factory URI's user part
    (and to its ``conf-…`` URIs) that reach the bridge (docs/group-chat.md). On the embedded
    default every group goes there; behind an IMS core only what the core routes here."""
    sip_trusted_peers: list[str] | None = None
    """Addresses and CIDR networks of the SIP trust domain (RFC 3325): only requests from
    these may assert an identity (P-Asserted-Identity) or act for a user; unset: the
    addresses ``sip_outbound_proxy`` resolves to, or on the embedded default loopback and
    ``sip_host`` (docs/deployment.md "Identity and trust"). E.g. ``["10.0.0.0/24"]``."""
    sip_untrusted_policy: Literal["refuse", "from-header"] = "refuse"
    """Out-of-dialog MESSAGE/INVITE/SUBSCRIBE/REFER from outside the trust domain: ``refuse``
    (403) or ``from-header`` (taken as claimed by From, P-Asserted-Identity removed: only
    for a closed network where whoever reaches the SIP port is trusted)."""

    # --- parser limits (issue 13; sip.limits, docs/hostile-input.md) --------------------
    # what the SIP, SDP, CPIM, XML and MSRP parsers accept: more is refused (400, 488 or
    # MSRP 400/413) before it can cost memory or time
    limit_digits: int = Field(20, ge=10, le=100)
    """Most digits of any protocol number (ports, CSeq, Content-Length, Expires, Byte-Range)."""
    limit_sip_header_size: int = Field(65536, ge=1024)
    """Largest SIP header section, in bytes."""
    limit_sip_header_fields: int = Field(256, ge=16)
    """Most header fields in one SIP message."""
    limit_sip_body_size: int = Field(1 << 20, ge=1024)
    """Largest SIP body on a TCP/TLS connection, in bytes (UDP: the datagram bounds it)."""
    limit_sdp_lines: int = Field(4096, ge=32)
    """Most lines in one SDP body (an MSRP offer has about 15)."""
    limit_mime_header_lines: int = Field(256, ge=16)
    """Most header lines of a CPIM message, a multipart body part or a message/sipfrag."""
    limit_xml_depth: int = Field(32, ge=8)
    """Deepest element nesting in an XML body (IMDN, isComposing, conference-info,
    resource-lists)."""
    limit_xml_elements: int = Field(20_000, ge=100)
    """Most elements in one XML body (a 1,000-member conference-info needs about 10,000)."""
    limit_xml_attributes: int = Field(64, ge=8)
    """Most attributes on one XML element."""
    limit_xml_attribute_length: int = Field(8192, ge=256)
    """Longest XML attribute value, in characters."""
    limit_xml_namespaces: int = Field(256, ge=8)
    """Most namespace declarations in one XML body."""
    limit_xml_namespace_length: int = Field(512, ge=64)
    """Longest XML namespace name, in characters (the known ones have under 64)."""
    limit_msrp_header_size: int = Field(16384, ge=1024)
    """Largest MSRP header block, in bytes."""
    limit_msrp_headers: int = Field(64, ge=16)
    """Most header lines in one MSRP frame."""
    limit_msrp_frame_size: int = Field(4 * 1024 * 1024 + 64 * 1024, ge=16384)
    """Largest MSRP frame, in bytes (peers send chunks of up to 4 MiB): a longer one closes
    the connection."""
    limit_msrp_message_size: int = Field(16 * 1024 * 1024, ge=16384)
    """Largest MSRP message once its chunks are put together, in bytes (413 above)."""

    # --- chat (1-1; issue 4, bridge.chat) ----------------------------------------
    chat_ringing_timeout: float = Field(60.0, gt=0)
    """Seconds an incoming invitation waits for the app's accept or decline (then 486)."""
    chat_invite_timeout: float = Field(40.0, gt=0)
    """Seconds an outgoing INVITE may stay unanswered before it is cancelled (Failed)."""
    chat_idle_timeout: float = Field(300.0, gt=0)
    """Seconds without traffic after which an implicit (adhoc) session is closed."""
    chat_adhoc_mode: Literal["session", "pager"] = "session"
    """How adhoc messages travel: an implicit MSRP session, or one SIP MESSAGE each."""
    chat_pager_fallback: bool = True
    """Use SIP MESSAGE when the adhoc INVITE is refused (403/405/415/488/606)."""
    chat_message_retention_days: float = Field(7.0, gt=0)
    """Days sent and received messages (and ended sessions) stay readable and correlatable."""
    chat_max_text_bytes: int = Field(8192, ge=1)
    """Largest chat message text (UTF-8 bytes) accepted from the app (400 above)."""
    chat_group_max_size: int = Field(100, ge=2)
    """Most members of a group chat, the creator included (403 POL0003 above)."""

    # --- operations -----------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the service log."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """Event loop: uvloop when installed (``auto``; about 4 % less CPU per chat message), or
    the standard library's."""
    trace_sip: bool = False
    """Log every SIP message on ``bridge.trace.sip`` at DEBUG."""
    trace_msrp: bool = False
    """Log every MSRP frame on ``bridge.trace.msrp`` at DEBUG."""

    # --- metrics, probes and logs (issue 12) ------------------------------------
    metrics_require_auth: bool = False
    """Ask the REST credentials for ``GET /metrics`` (default: served to anyone who can reach
    the REST listener, like ``/health``; docs/operations.md)."""
    ready_store_timeout: float = Field(1.0, gt=0)
    """Seconds ``GET /ready`` waits for the store's ``SELECT 1`` before it counts as down."""
    ims_ping_interval: float = Field(10.0, ge=0)
    """Seconds between two OPTIONS pings to ``sip_outbound_proxy`` (none without it):
    ``/ready`` answers 503 while the last ping went unanswered. 0: no ping, and ``/ready``
    does not ask the IMS core (a core that cannot answer OPTIONS)."""
    ims_ping_timeout: float = Field(2.0, gt=0)
    """Seconds an OPTIONS ping may wait for its final response (any status counts)."""
    loop_lag_interval: float = Field(0.5, gt=0)
    """Seconds between two event-loop lag samples (``chat_bridge_event_loop_lag_seconds``)."""
    access_log: bool = True
    """One line per REST request on the ``bridge.access`` logger (INFO): method, route
    template, status, duration and request id."""
    log_format: Literal["text", "json"] = "text"
    """``text``: one human-readable line per record; ``json``: one JSON object per line
    (fields ``ts``, ``level``, ``logger``, ``msg`` and extras, docs/operations.md)."""
    log_redact: bool = False
    """Mask user addresses (tel:/sip: URIs, phone numbers) and message bodies in the log."""

    # --- TLS (issue 12) ------------------------------------------------------------
    tls_cert_file: str | None = None
    """PEM certificate chain the bridge presents on SIP over TLS and MSRP over TLS
    (docs/tls.md); its sha-256 fingerprint goes into the SDP of msrps offers."""
    tls_key_file: str | None = None
    """PEM private key of ``tls_cert_file`` (unset: the key is in the certificate file)."""
    tls_ca_file: str | None = None
    """PEM file of the CAs that verify SIP and MSRP peers (unset, with no
    ``tls_ca_dir``: the system trust store)."""
    tls_ca_dir: str | None = None
    """Directory of hashed CA certificates (``openssl rehash``) that verify peers."""
    sip_tls_port: int = Field(5071, ge=0, le=65535)
    """Port of the SIP TLS listener when ``tls`` is in ``sip_transports`` (0: a free port)."""
    sip_tls_verify: Literal["none", "peer"] = "peer"
    """SIP TLS peers we connect to: ``peer`` verifies their certificate chain against the
    CAs and refuses a bad one; ``none`` encrypts without checking (tests only)."""
    sip_tls_check_hostname: bool = True
    """With ``sip_tls_verify: peer``, also check that the certificate names the host we
    dialled (the outbound proxy's or the URI's host; an IP address must be an IP SAN)."""
    sip_tls_verify_client: bool = False
    """Ask inbound SIP TLS peers (the IMS core) for a certificate and verify it against the
    CAs (mutual TLS); without one their connection is refused."""
    msrp_tls_port: int | None = Field(None, ge=0, le=65535)
    """Port of the MSRP TLS listener (``msrps://``, RFC 4975 §14); unset: no MSRP over TLS
    (0: a free port). Needs ``tls_cert_file``."""
    msrp_tls_offer: Literal["always", "sips", "never"] = "sips"
    """When the bridge offers MSRP over TLS (``TCP/TLS/MSRP``, ``a=path:msrps://``):
    ``always``; ``sips`` only when the SIP leg is secure (a ``sips:`` peer or an outbound
    proxy reached over TLS); ``never`` (msrps offers of peers are still answered)."""
    msrp_tls_verify: Literal["fingerprint", "peer", "none"] = "fingerprint"
    """MSRP TLS peers we connect to: ``fingerprint`` accepts a self-signed certificate whose
    sha-256 matches the peer's SDP ``a=fingerprint`` and, with none in the SDP, verifies the
    chain against the CAs; ``peer`` verifies the chain always and the fingerprint when given;
    ``none`` checks nothing (tests only)."""
    http_tls_cert_file: str | None = None
    """PEM certificate chain of the REST listener: set, the API is served over HTTPS and the
    default ``server_root`` is ``https://`` (or terminate TLS in a reverse proxy, docs/tls.md)."""
    http_tls_key_file: str | None = None
    """PEM private key of ``http_tls_cert_file`` (unset: the key is in the certificate file)."""

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        if not self.tls_cert_file:
            if "tls" in self.sip_transports:
                raise ValueError("sip_transports has tls: set tls_cert_file (docs/tls.md)")
            if self.msrp_tls_port is not None:
                raise ValueError("msrp_tls_port is set: set tls_cert_file (docs/tls.md)")
        if self.http_tls_key_file and not self.http_tls_cert_file:
            raise ValueError("http_tls_key_file needs http_tls_cert_file")
        if self.tls_key_file and not self.tls_cert_file:
            raise ValueError("tls_key_file needs tls_cert_file")
        return self

    # --- shutdown (issue 12) -------------------------------------------------------
    shutdown_timeout: float = Field(10.0, gt=0, le=600)
    """Seconds the graceful shutdown on SIGTERM/SIGINT may take in all (docs/configuration.md
    "Shutdown"): new work refused, open long polls answered, in-flight requests finished, live
    sessions ended (BYE, CANCEL) and their apps told, the outbox flushed. Past it the process
    exits with what is left (kept in the store); a second signal exits at once."""
    shutdown_request_timeout: float = Field(3.0, ge=0, le=600)
    """Seconds, within ``shutdown_timeout``, that REST requests already under way get to
    finish before the live sessions are ended (new requests get 503 with ``Retry-After``)."""
    shutdown_retry_after: int = Field(5, ge=0, le=3600)
    """``Retry-After`` seconds of the 503 answers to REST requests and SIP INVITEs that arrive
    during the shutdown (an instance behind the same name should take them by then)."""

    # --- several instances (issue 10) ----------------------------------------------
    instance_id: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9._:@-]*$")
    """Id of this instance in the shared store, the owner of the sessions it creates
    (docs/several-instances.md). Empty: a new id at each start (host, process id, random),
    so a restart is recovered like any dead instance. A configured id must differ between
    instances running at once; a restart under the same id waits until no peer is still
    recovering the previous run."""
    instance_takeover_interval: float = Field(10.0, gt=0)
    """Seconds between two looks, on PostgreSQL, for dead instances (their liveness lock
    free): a survivor reports a dead instance's live sessions ended and recovers its
    messages within about this time after its death (``bridge.takeover``)."""
    instance_heartbeat: float = Field(10.0, gt=0)
    """Seconds between two heartbeats of this instance on PostgreSQL (``instances.heartbeat_at``;
    each one also checks the connection holding the instance's liveness lock)."""
    channel_recheck_interval: float = Field(30.0, gt=0)
    """Seconds between two safety re-checks (reads) of the store by an idle long poll of a
    Notification Channel. A poll is woken at once by whatever queues for its channel (in
    this process, and on PostgreSQL by any instance through ``LISTEN/NOTIFY``); while the
    PostgreSQL listening connection is down it re-checks every
    ``notification_poll_interval`` instead (docs/several-instances.md)."""

    @field_validator("server_root")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("server_root must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("notify_allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"notify_allowed_networks: {exc}") from None
        return v

    @field_validator("sip_trusted_peers")
    @classmethod
    def _trusted_peers(cls, v: list[str] | None) -> list[str] | None:
        for entry in v or ():
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"sip_trusted_peers: {exc}") from None
        return v

    @model_validator(mode="after")
    def _channel_lifetimes(self) -> Settings:
        if self.channel_min_lifetime > self.channel_max_lifetime:
            raise ValueError("channel_min_lifetime must not exceed channel_max_lifetime")
        return self

    @model_validator(mode="after")
    def _default_root(self) -> Settings:
        if not self.server_root:
            host = self.http_host
            if host in {"0.0.0.0", "::", ""}:
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            scheme = "https" if self.http_tls_cert_file else "http"
            self.server_root = f"{scheme}://{host}:{self.http_port}"
        return self

    @property
    def loopback_only(self) -> bool:
        """True when the REST listener is bound to a loopback address."""
        return self.http_host in {"127.0.0.1", "::1", "localhost"} or self.http_host.startswith(
            "127."
        )

    @property
    def notify_loopback_allowed(self) -> bool:
        """``notify_allow_loopback``, or when unset: a loopback listener without credentials."""
        if self.notify_allow_loopback is not None:
            return self.notify_allow_loopback
        return self.loopback_only and not self.credentials

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment (and the *_FILE files) wins over the file, which arrives as init kwargs
        return (_EnvironmentSource(settings_cls), init_settings)


def example_yaml() -> str:
    """A YAML settings file listing every setting with its default and description."""
    lines = [
        "# chat-bridge settings: every key with its default. Environment variables",
        f"# {ENV_PREFIX}<KEY IN CAPITALS> override the file (nested values as JSON).",
        "# Generated by `chat-bridge config --example`.",
    ]
    defaults = Settings.model_construct().model_dump(mode="json")
    for name, field in Settings.model_fields.items():
        lines.append("")
        if field.description:
            lines.extend(f"# {line}".rstrip() for line in field.description.splitlines())
        dumped = yaml.safe_dump({name: defaults[name]}, default_flow_style=False, sort_keys=False)
        lines.extend(dumped.rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Build the settings from ``config_file`` (YAML) overlaid by the environment.

    Raises ``ConfigError`` for an unreadable file, an invalid value, a setting given both as
    ``CHAT_BRIDGE_X`` and ``CHAT_BRIDGE_X_FILE``, or a store whose driver is not installed.
    """
    import os

    path = config_file or os.environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        data = dict(loaded or {})
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    except SettingsError as exc:  # a variable that is not valid JSON for a nested setting
        raise ConfigError(mask_text(str(exc))) from exc
    check_store_driver(settings.database_url)
    return settings


# --- configuration hygiene (issue 12; docs/configuration.md) ---------------------------


class _EnvironmentSource(EnvSettingsSource):
    """``CHAT_BRIDGE_*`` variables, with ``CHAT_BRIDGE_<NAME>_FILE`` read in their place."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found = dict(super()._load_env_vars())
        for name in self.settings_cls.model_fields:
            key = self._key(ENV_PREFIX + name.upper())
            file_key = self._key(ENV_PREFIX + name.upper() + FILE_SUFFIX)
            file_path = found.pop(file_key, None)
            if file_path is None:
                continue
            variable = ENV_PREFIX + name.upper()
            if key in found:
                raise ConfigError(f"both {variable} and {variable}{FILE_SUFFIX} are set")
            found[key] = read_value_file(variable + FILE_SUFFIX, file_path)
        return found

    def _key(self, variable: str) -> str:
        return variable if self.case_sensitive else variable.lower()


def read_value_file(variable: str, path: str) -> str:
    """The content of the file ``variable`` names, less one trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc}") from exc
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


def known_variables() -> set[str]:
    """Every ``CHAT_BRIDGE_*`` variable the bridge reads (upper case)."""
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return names | {n + FILE_SUFFIX for n in names} | {ENV_PREFIX + "CONFIG"}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``CHAT_BRIDGE_*`` variable of ``environ`` that names no setting, with
    the closest known name when one is close (``CHAT_BRIDGE_TEST_*`` belong to the tests)."""
    known = known_variables()
    lines = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith(ENV_PREFIX + "TEST_"):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"unknown environment variable {variable}{hint}")
    return lines


def check_store_driver(database_url: str) -> None:
    """``ConfigError`` when ``database_url`` needs a driver that is not installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError as exc:
        raise ConfigError(f"database_url is not a database URL: {exc}") from None
    if backend != "postgresql":
        return
    try:
        importlib.import_module("asyncpg")
    except ImportError:
        raise ConfigError(
            "database_url is a PostgreSQL store but its driver, asyncpg, is not installed:"
            " pip install 'chat-bridge[postgres]'"
        ) from None


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<password>[^@/\s]+)@", re.I)


def describe(exc: ValidationError) -> str:
    """The invalid settings of ``exc``, one per line, without the values given (secrets)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    lines = [f"{len(errors)} invalid setting{'s' if len(errors) != 1 else ''}"]
    for error in errors:
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {mask_text(error['msg'])}")
    return "\n".join(lines)


def mask_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL masked."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)


def _is_secret(name: str, field: FieldInfo | None) -> bool:
    if name.lower().endswith(("password", "passphrase", "secret", "token")):
        return True
    extra = field.json_schema_extra if field is not None else None
    return isinstance(extra, dict) and bool(extra.get("secret"))


def _masked(value: Any, model: type[BaseModel] | None) -> Any:
    if isinstance(value, dict):
        fields = model.model_fields if model is not None else {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            field = fields.get(key)
            if isinstance(item, str) and item and _is_secret(key, field):
                out[key] = mask_text(item) if "://" in item else MASK
            else:
                out[key] = _masked(item, _nested_model(field))
        return out
    if isinstance(value, list):
        return [_masked(item, model) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def _nested_model(field: FieldInfo | None) -> type[BaseModel] | None:
    """The model of a nested setting (``list[Credential]`` → ``Credential``), if any."""
    if field is None:
        return None
    candidates = [field.annotation, *typing.get_args(field.annotation)]
    for kind in candidates:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as JSON data with every secret masked (``chat-bridge config``)."""
    data = settings.model_dump(mode="json")  # a SecretStr is "**********" already
    masked: dict[str, Any] = _masked(data, Settings)
    return masked
