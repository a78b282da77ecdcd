"""A hotvcb `.gz` backup rewritten in place, as the attacks on compressed backups tamper with one: its
manifest edited, members left out, one member's byte flipped."""

import io
import json
import tarfile


def repack(archive, edit_manifest=None, flip=None):
    """Rewrite the .gz at `archive`: `edit_manifest(data, files)` edits its hotvcb.json (`files`: each member's
    bytes by its name in the backup) and may return names of members to leave out; `flip`: the member one byte of
    which is flipped."""
    with tarfile.open(archive) as t:
        members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
    files = {m.name.split("/", 1)[1]: blob for m, blob in members if m.isfile()}
    manifest, dropped = None, set()
    if edit_manifest:
        data = json.loads(files["hotvcb.json"])
        dropped = set(edit_manifest(data, files) or ())
        manifest = json.dumps(data).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for m, blob in members:
            rel = m.name.split("/", 1)[1] if "/" in m.name else None
            if rel in dropped:
                continue
            if rel == "hotvcb.json" and manifest is not None:
                blob = manifest
            if flip and rel == flip:
                blob = bytearray(blob)
                blob[len(blob) // 2] ^= 0xFF
                blob = bytes(blob)
            if blob is not None:
                m.size = len(blob)
                t.addfile(m, io.BytesIO(blob))
            else:
                t.addfile(m)
    with open(archive, "wb") as f:
        f.write(buf.getvalue())
