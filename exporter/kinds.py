"""The probe kinds dnsgap knows, and which of them speak DSO."""

from __future__ import annotations

import enum


class ProbeKind(enum.StrEnum):
    #: A QUERY for any name/type/class, with EDNS knobs (RFC 1035, RFC 6891).
    QUERY = "query"
    #: Incremental transfer, RFC 1995 form (SOA with our serial in authority).
    IXFR = "ixfr"
    #: Full transfer (RFC 5936); only the first messages are read.
    AXFR = "axfr"
    #: Dynamic UPDATE (RFC 2136): a prerequisite that cannot hold, no update section.
    UPDATE = "update"
    #: NOTIFY (RFC 1996); opt-in, since it makes a secondary refresh.
    NOTIFY = "notify"
    #: A header-only message with any raw opcode 0-15.
    OPCODE = "opcode"
    #: DSO Keepalive request (RFC 8490 §7.1): does the server speak DSO at all?
    DSO_KEEPALIVE = "dso_keepalive"
    #: A chosen DSO TLV type inside an established session (DSOTYPENI test).
    DSO_TLV = "dso_tlv"
    #: DNS Push SUBSCRIBE (RFC 8765 §6.2).
    DSO_PUSH_SUBSCRIBE = "dso_push_subscribe"
    #: Keepalive with an Encryption Padding TLV (RFC 8490 §7.3), over TLS.
    DSO_PADDING = "dso_padding"

    @property
    def is_dso(self) -> bool:
        return self.value.startswith("dso_")

    @property
    def is_transfer(self) -> bool:
        return self in (ProbeKind.IXFR, ProbeKind.AXFR)
