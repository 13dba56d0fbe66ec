"""GraphiQL that works offline: Strawberry's page, with the files it would load from a CDN
served by the app itself (development only, like the page).

The files are vendored in `graphiql_assets/`, laid out as the CDN serves them
(`<package>@<version>/<file>`), each package's package.json and licence beside them. The page
keeps its Subresource Integrity hashes, so the browser itself checks that each file is the published
one. When Strawberry moves to other versions, `make graphiql-assets` fetches the ones its page
names from the npm registry (`npm pack`) and checks them against those hashes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

ASSETS_DIR = Path(__file__).resolve().with_name("graphiql_assets")
# Where the app serves them; the page names them relative to /graphql.
MOUNT = "/graphiql"
CDN = "https://unpkg.com/"
_ASSET = re.compile(
    r'(?:src|href)="' + re.escape(CDN) + r'(?P<path>[^"]+)"\s+integrity="(?P<integrity>[^"]+)"'
)


@dataclass(frozen=True)
class Asset:
    path: str  # "react@18.2.0/umd/react.production.min.js"
    integrity: str  # "sha384-..."

    @property
    def package(self) -> str:
        """The npm package spec: "react@18.2.0", "@graphiql/plugin-explorer@1.0.2"."""
        parts = self.path.split("/")
        return "/".join(parts[:2]) if self.path.startswith("@") else parts[0]

    @property
    def file(self) -> str:
        """The file inside the package."""
        return self.path[len(self.package) + 1 :]


def _upstream_html() -> str:
    return get_graphql_ide_html(graphql_ide="graphiql")


def assets(html: str | None = None) -> list[Asset]:
    """The files Strawberry's GraphiQL page loads from the CDN."""
    return [Asset(m["path"], m["integrity"]) for m in _ASSET.finditer(html or _upstream_html())]


@cache
def graphiql_html() -> str:
    """Strawberry's page loading everything from this app: no CDN, no internet."""
    return _upstream_html().replace(CDN, MOUNT.lstrip("/") + "/")


def sri(content: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(content).digest()).decode()


def vendor(target: Path = ASSETS_DIR) -> None:
    """Fetch every file the page names from the npm registry into `target`, checked against
    the page's integrity hashes; drops files no longer named."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is required to fetch the GraphiQL files")
    wanted = assets()
    if not wanted:
        raise SystemExit("Strawberry's GraphiQL page names no CDN files: nothing to vendor")
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "assets"
        for package in sorted({a.package for a in wanted}):
            packed = subprocess.run(
                [npm, "pack", package, "--silent", "--pack-destination", scratch],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
            with tarfile.open(Path(scratch) / packed) as tarball:
                files = [a.file for a in wanted if a.package == package]
                # package.json names the licence; LICENSE holds its text where shipped.
                present = set(tarball.getnames())
                licence = ["LICENSE"] if "package/LICENSE" in present else []
                for name in [*files, "package.json", *licence]:
                    member = tarball.extractfile(f"package/{name}")
                    if member is None:
                        raise SystemExit(f"{package} has no {name}")
                    destination = fresh / package / name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(member.read())
        for asset in wanted:
            if sri((fresh / asset.path).read_bytes()) != asset.integrity:
                raise SystemExit(f"{asset.path} does not match the page's integrity hash")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh, target)


if __name__ == "__main__":
    destination = Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS_DIR
    vendor(destination)
    print(f"GraphiQL files in {destination}")
