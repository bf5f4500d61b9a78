"""A private OpenLDAP ``slapd`` for tests: own CA, own ports, own data.

The fixture generates a CA and a server certificate for ``localhost`` with
openssl, loads people and groups with ``slapadd`` and runs ``slapd -d 0`` in
the foreground on 127.0.0.1 (ldap:// and ldaps://), plus ldaps:// on
127.0.0.2, an address the certificate does not name. It is stopped by its pid
at the end of the session. A missing slapd fails the tests: directory sign-in
is not something to skip silently.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.processes import end_process, free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"

# uid -> (password, cn). "Carol" is stored capitalised on purpose.
PEOPLE_ENTRIES = {
    "alice": ("alice-pw", "Alice Liddell"),
    "Carol": ("carol-pw", "Carol Danvers"),
    "dave": ("dave-pw", "Dave Lister"),
    "erin": ("erin-pw", "Erin Local"),
    "frank": ("frank-pw", "Frank Poole"),
    "grace": ("grace-pw", "Grace Hopper"),
}
GROUP_OF_NAMES = f"cn=chat,{GROUPS}"  # alice, Carol
GROUP_OF_UNIQUE_NAMES = f"cn=chat-unique,{GROUPS}"  # alice
POSIX_GROUP = f"cn=chat-posix,{GROUPS}"  # alice, grace


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ldif() -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {_ssha(READER_PASSWORD)}\n",
    ]
    for number, (uid, (password, cn)) in enumerate(PEOPLE_ENTRIES.items()):
        blocks.append(
            f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: {uid}\ncn: {cn}\nsn: {cn.split()[-1]}\n"
            f"uidNumber: {2000 + number}\ngidNumber: 2000\n"
            f"homeDirectory: /home/{uid.lower()}\nuserPassword: {_ssha(password)}\n"
        )
    blocks.append(
        f"dn: {GROUP_OF_NAMES}\nobjectClass: groupOfNames\ncn: chat\n"
        f"member: {user_dn('alice')}\nmember: {user_dn('Carol')}\n"
    )
    blocks.append(
        f"dn: {GROUP_OF_UNIQUE_NAMES}\nobjectClass: groupOfUniqueNames\ncn: chat-unique\n"
        f"uniqueMember: {user_dn('alice')}\n"
    )
    blocks.append(
        f"dn: {POSIX_GROUP}\nobjectClass: posixGroup\ncn: chat-posix\ngidNumber: 3000\n"
        "memberUid: alice\nmemberUid: grace\n"
    )
    return "\n".join(blocks)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA; returns its certificate (the key sits beside it)."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=Chateau test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return directory / f"{name}.pem"


def make_server_cert(directory: Path, ca: str, name: str, san: str) -> tuple[Path, Path]:
    """A server certificate signed by *ca* for the names in *san*."""
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
        "-extfile", f"{name}.ext",
        cwd=directory,
    )
    return directory / f"{name}.pem", directory / f"{name}.key"


@dataclass
class Slapd:
    """A running slapd and what tests need to reach it."""

    process: subprocess.Popen
    workdir: Path
    ldap_port: int
    ldaps_port: int
    wrong_host_port: int
    ca_file: Path
    other_ca_file: Path

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://localhost:{self.ldap_port}"

    @property
    def wrong_host_url(self) -> str:
        """ldaps:// on an address that the server certificate does not name."""
        return f"ldaps://127.0.0.2:{self.wrong_host_port}"

    def settings(self, **overrides: str) -> dict[str, str]:
        """``[ldap]`` keys for the service-account search over LDAPS."""
        values = {
            "url": self.ldaps_url,
            "ca_file": str(self.ca_file),
            "base_dn": PEOPLE,
            "bind_dn": READER_DN,
            "bind_password": READER_PASSWORD,
            "timeout": "1",
        }
        values.update(overrides)
        return values

    def stop(self) -> None:
        end_process(self.process)

    # -- changing the directory, as its administrators do (blocking, brief) --

    def admin(self) -> Any:
        """An ldap3 connection bound as the directory's root, over LDAPS."""
        import ssl

        from ldap3 import Connection, Server, Tls

        tls = Tls(ca_certs_file=str(self.ca_file), validate=ssl.CERT_REQUIRED)
        server = Server("localhost", port=self.ldaps_port, use_ssl=True, tls=tls)
        return Connection(server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)

    def _admin_do(self, work: Any) -> None:
        connection = self.admin()
        try:
            ok = work(connection)
            assert ok, connection.result
        finally:
            connection.unbind()

    def add_person(self, uid: str, password: str, cn: str | None = None) -> str:
        """Add a person under ou=people (a new entry: a new entryUUID); its DN."""
        cn = cn or uid.title()
        dn = user_dn(uid)
        self._admin_do(lambda c: c.add(dn, ["inetOrgPerson"], {
            "uid": uid, "cn": cn, "sn": cn.split()[-1], "userPassword": _ssha(password),
        }))
        return dn

    def rename_person(self, uid: str, new_uid: str) -> str:
        """modrdn: the entry (and its entryUUID) stays, its uid becomes *new_uid*."""
        self._admin_do(lambda c: c.modify_dn(user_dn(uid), f"uid={new_uid}",
                                             delete_old_dn=True))
        return user_dn(new_uid)

    def set_display_name(self, uid: str, cn: str) -> None:
        """Change the person's cn (the default display_name_attribute)."""
        from ldap3 import MODIFY_REPLACE

        self._admin_do(lambda c: c.modify(user_dn(uid), {"cn": [(MODIFY_REPLACE, [cn])]}))

    def delete_person(self, uid: str) -> None:
        self._admin_do(lambda c: c.delete(user_dn(uid)))

    def entry_uuid(self, uid: str) -> str:
        connection = self.admin()
        try:
            connection.search(user_dn(uid), "(objectClass=*)", search_scope="BASE",
                              attributes=["entryUUID"])
            return str(connection.entries[0].entryUUID.value).lower()
        finally:
            connection.unbind()
    # -- changing the directory as its administrator (group sync tests) -------

    def _admin(self) -> Any:
        import ssl

        from ldap3 import SIMPLE, Connection, Server, Tls

        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file))
        server = Server("localhost", port=self.ldaps_port, use_ssl=True, tls=tls,
                        connect_timeout=5)
        return Connection(server, ADMIN_DN, ADMIN_PASSWORD, authentication=SIMPLE,
                          auto_bind=True, raise_exceptions=True, receive_timeout=5)

    def add(self, dn: str, object_class: str | list[str], **attributes: Any) -> None:
        """Add an entry (e.g. an ``organizationalUnit`` or a group) as the rootdn."""
        conn = self._admin()
        try:
            conn.add(dn, object_class, attributes)
        finally:
            conn.unbind()

    def add_members(self, dn: str, attribute: str, *values: str) -> None:
        self._modify(dn, {attribute: [("MODIFY_ADD", list(values))]})

    def remove_members(self, dn: str, attribute: str, *values: str) -> None:
        self._modify(dn, {attribute: [("MODIFY_DELETE", list(values))]})

    def _modify(self, dn: str, changes: dict[str, Any]) -> None:
        conn = self._admin()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()


def _wait_listening(process: subprocess.Popen, ports: list[tuple[str, int]], log: Path) -> None:
    deadline = time.monotonic() + 15
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            pytest.fail(f"slapd exited with {process.returncode}: {log.read_text()[-2000:]}")
        host, port = pending[0]
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"slapd did not listen on {host}:{port}: {log.read_text()[-2000:]}")
            time.sleep(0.05)


def start_slapd(workdir: Path) -> Slapd:
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            pytest.fail(
                f"{tool} not found: install OpenLDAP (apt-get install -y slapd ldap-utils), "
                "or run scripts/test, which does"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file = make_ca(workdir, "ca")
    other_ca_file = make_ca(workdir, "other-ca")
    cert, key = make_server_cert(workdir, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    database = workdir / "db"
    database.mkdir()
    conf = workdir / "slapd.conf"
    includes = "".join(
        f"include {SCHEMA_DIR / name}.schema\n"
        for name in ("core", "cosine", "nis", "inetorgperson")
    )
    conf.write_text(
        includes
        + f"pidfile {workdir / 'slapd.pid'}\n"
        f"argsfile {workdir / 'slapd.args'}\n"
        f"modulepath {MODULE_DIR}\n"
        "moduleload back_mdb\n"
        # pwdAccountLockedTime, the attribute a locked account has (a
        # disabled_filter example; no policy is enforced on binds).
        "moduleload ppolicy\n"
        f"TLSCACertificateFile {ca_file}\n"
        f"TLSCertificateFile {cert}\n"
        f"TLSCertificateKeyFile {key}\n"
        "database mdb\n"
        "maxsize 16777216\n"
        f'suffix "{SUFFIX}"\n'
        f'rootdn "{ADMIN_DN}"\n'
        f"rootpw {ADMIN_PASSWORD}\n"
        f"directory {database}\n"
        "overlay ppolicy\n"
        "access to attrs=userPassword\n"
        "    by self read\n"
        "    by anonymous auth\n"
        "    by * none\n"
        "access to *\n"
        "    by * read\n"
    )
    data = workdir / "data.ldif"
    data.write_text(_ldif())
    loaded = subprocess.run(
        [SLAPADD, "-q", "-f", str(conf), "-l", str(data)],
        capture_output=True, text=True, timeout=60,
    )
    if loaded.returncode != 0:
        pytest.fail(f"slapadd failed: {loaded.stderr.strip()}")
    ldap_port, ldaps_port = free_port(), free_port()
    wrong_host_port = free_port("127.0.0.2")
    urls = (
        f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/ "
        f"ldaps://127.0.0.2:{wrong_host_port}/"
    )
    log = workdir / "slapd.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [SLAPD, "-d", "0", "-h", urls, "-f", str(conf)],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        _wait_listening(
            process,
            [("127.0.0.1", ldap_port), ("127.0.0.1", ldaps_port), ("127.0.0.2", wrong_host_port)],
            log,
        )
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    return Slapd(process, workdir, ldap_port, ldaps_port, wrong_host_port, ca_file, other_ca_file)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()
