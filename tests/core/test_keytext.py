from ebmops.core.keytext import raw32


def test_raw_bytes_and_hex_text_give_the_key_anything_else_none():
    key = bytes(range(32))
    assert raw32(key) == key
    assert raw32(key.hex()) == key == raw32(f"  {key.hex().upper()}\n") == raw32(key.hex().encode())
    assert raw32("zz" * 32) is None  # 64 characters, not hex
    assert raw32("-----BEGIN PRIVATE KEY-----\n...") is None and raw32(key[:31]) is None
