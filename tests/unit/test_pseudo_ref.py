#!/usr/bin/python3
"""Reference pseudonyms for tests/unit/test_pseudo.c, from Python's hmac module
(an implementation independent of OpenSSL's low-level SHA-256 API used by
engine/pseudo.c). Key: bytes 0x00..0x1f. Pseudonym = first 16 bytes of
HMAC-SHA256(key, "<domain>:<normalized value>") as hex."""
import hashlib
import hmac

KEY = bytes(range(32))
CASES = [("ssn", "123456789"), ("patient", "00016F745862898F"), ("name", "smith"),
         ("email", "jane.doe@example.org"), ("phone", "5551234567"), ("encounter", "E1")]
for dom, val in CASES:
    mac = hmac.new(KEY, f"{dom}:{val}".encode(), hashlib.sha256).hexdigest()[:32]
    print(f'{{"{dom}", "{val}", "{mac}"}},')
