"""Pack files into a one-layer docker-archive (what `docker save` writes), for `ctr images import`.

    python3 image-archive.py OUT.tar REF ENTRYPOINT USER SRC:DST [SRC:DST ...]

Used by scripts/kubernetes.sh to make the pause image without a registry or a Docker build.
"""

import hashlib
import io
import json
import sys
import tarfile


def layer(files: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for src, dst in files:
            info = tar.gettarinfo(src, arcname=dst.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(src, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(out: str, ref: str, entrypoint: str, user: str, *pairs: str) -> None:
    data = layer([tuple(p.split(":", 1)) for p in pairs])
    diff = hashlib.sha256(data).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Entrypoint": [entrypoint], "User": user},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [diff + "/layer.tar"]}]
    with tarfile.open(out, "w") as tar:
        add(tar, config_name, config)
        add(tar, diff + "/layer.tar", data)
        add(tar, "manifest.json", json.dumps(manifest).encode())


if __name__ == "__main__":
    main(*sys.argv[1:])
