"""Run the built image both ways users run it, and check each (make docker-test runs this).

    python tests/docker_check.py IMAGE

For each way: start a container with --network=host on free ports, wait for /health, POST
payload.json over HTTPS with the certificate verified, check the 8 labels, the same over the V2
door's gRPC, and the user, then stop it with a request in flight and check that the request was
answered and the stop was graceful (the gRPC process's too).
Prints the figures (image size, seconds to healthy, seconds to stop). Exits 0 without testing,
saying so, when no Docker engine answers.
"""

import json
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import registry  # noqa: E402

PAYLOAD = json.loads((ROOT / "payload.json").read_text())
EXPECTED = registry.load_one().get().model.run(list(PAYLOAD.values()))  # the default model's
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "server.*", ".api_token")


def docker(*args, check=True, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def https(url, cafile=None, body=None, timeout=10):
    """Return (status, parsed JSON) for a GET, or a POST of a JSON body."""
    # Without a cafile (health polls, before the certificate is at hand) nothing is verified.
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False  # the 2020 certificate names no host; the chain is checked
    if not cafile:
        context.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Case:
    """One way of running the image."""

    def __init__(self, name, image, run_args, command, cert, token, root_allowed):
        self.name, self.image, self.run_args, self.command = name, image, run_args, command
        self.cert, self.token, self.root_allowed = cert, token, root_allowed
        self.port, self.grpc_port = free_port(), free_port()
        self.container = f"model-api-check-{self.port}"
        self.figures = {}

    def run(self):
        docker("rm", "-f", self.container, check=False)
        started = time.monotonic()
        docker(
            "run", "-d", "--name", self.container, "--network=host", "-e", f"PORT={self.port}",
            "-e", f"GRPC_PORT={self.grpc_port}", *self.run_args, self.image, *self.command,
        )  # fmt: skip
        # With the vfs storage driver (this machine's), `docker run` copies the image first.
        self.figures["seconds_for_docker_run"] = time.monotonic() - started
        try:
            self.wait_for_health(started)
            self.token_value = self.token(self)
            self.check_labels()
            self.check_grpc()
            self.check_user()
            self.stop_gracefully()
        except BaseException:
            print(docker("logs", "--tail", "40", self.container, check=False).stderr)
            raise
        finally:
            self.output = docker("logs", self.container, check=False)
            self.output = self.output.stdout + self.output.stderr
            docker("rm", "-f", self.container, check=False)
        self.check_output()

    def url(self, path):
        return f"https://localhost:{self.port}{path}"

    def wait_for_health(self, started, seconds=60):
        while time.monotonic() - started < seconds:
            try:
                if https(self.url("/health"), timeout=2)[0] == 200:
                    self.figures["seconds_to_health"] = time.monotonic() - started
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"{self.name}: no /health within {seconds} s")
        while time.monotonic() - started < seconds:
            health = docker("inspect", "-f", "{{.State.Health.Status}}", self.container).stdout
            if health.strip() == "healthy":
                self.figures["seconds_to_docker_healthy"] = time.monotonic() - started
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: Docker's HEALTHCHECK never said healthy")

    def check_labels(self):
        status, answer = https(self.predict_url(), cafile=self.cert(self), body=PAYLOAD)
        assert status == 200, (status, answer)
        assert list(answer) == list(PAYLOAD), answer
        assert list(answer.values()) == EXPECTED, answer

    def check_grpc(self, seconds=30):
        """The V2 door's gRPC, over TLS with the same certificate and token: the same labels."""
        import grpc

        from v2 import grpc_predict_v2_pb2 as pb2
        from v2 import grpc_predict_v2_pb2_grpc as pb2_grpc

        request = pb2.ModelInferRequest(model_name="stable")
        texts = [t.encode() for t in PAYLOAD.values()]
        request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
        request.inputs[0].contents.bytes_contents.extend(texts)
        credentials = grpc.ssl_channel_credentials(Path(self.cert(self)).read_bytes())
        # The 2020 certificate names no host (no subjectAltName): its CN is checked.
        options = [("grpc.ssl_target_name_override", "localhost")]
        deadline = time.monotonic() + seconds
        with grpc.secure_channel(f"localhost:{self.grpc_port}", credentials, options) as channel:
            stub = pb2_grpc.GRPCInferenceServiceStub(channel)
            metadata = (("authorization", f"Bearer {self.token_value}"),)
            while True:  # the gRPC process starts beside gunicorn, a moment after it
                try:
                    answer = stub.ModelInfer(request, metadata=metadata, timeout=5)
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        labels = answer.raw_output_contents[0]
        assert labels == b"".join(len(x).to_bytes(4, "little") + x.encode() for x in EXPECTED)

    def predict_url(self):
        return self.url(f"/api/v1/{self.token_value}/predict")

    def check_user(self):
        top = docker("top", self.container, "-eo", "pid,uid,args").stdout.splitlines()
        uids = {int(line.split()[1]) for line in top[1:] if "gunicorn" in line}
        assert uids, top
        self.figures["gunicorn_uids"] = sorted(uids)
        if not self.root_allowed:
            assert 0 not in uids, f"{self.name}: gunicorn runs as root"

    def stop_gracefully(self):
        """Stop with a 10,000-tweet request in flight; it must be answered."""
        big = {str(i): f"tweet number {i}, what a lovely day" for i in range(10_000)}
        answer = {}

        def send():
            answer["result"] = https(self.predict_url(), body=big, timeout=30)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.05)
        started = time.monotonic()
        docker("stop", "-t", "10", self.container)
        self.figures["seconds_to_stop"] = time.monotonic() - started
        sender.join()
        status, body = answer["result"]
        assert status == 200 and len(body) == 10_000, f"{self.name}: in-flight request lost"
        code = docker("inspect", "-f", "{{.State.ExitCode}}", self.container).stdout.strip()
        assert code == "0", f"{self.name}: exit code {code} (137 means killed)"
        assert self.figures["seconds_to_stop"] < 10, self.figures

    def check_output(self):
        assert "Shutting down: Master" in self.output, self.output[-2000:]
        assert '"message": "stopped"' in self.output, f"{self.name}: no graceful gRPC stop"
        assert self.token_value not in self.output, f"{self.name}: the token is in the log"
        for tweet in PAYLOAD.values():
            assert tweet not in self.output, f"{self.name}: a tweet is in the log"


def as_kubernetes_runs_it(image, tmp):
    """The pod of k8s/deployment.yaml: its user from the first process, read-only root, its
    command, its settings, and the Secrets' files where the manifest mounts them."""
    import yaml

    pod = yaml.safe_load((ROOT / "k8s" / "deployment.yaml").read_text())["spec"]["template"]
    container = pod["spec"]["containers"][0]
    security = pod["spec"]["securityContext"]
    token = secrets.token_hex(16)
    tls = tmp / "tls"
    tls.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.crt"],
        cwd=tls, check=True, capture_output=True,
    )  # fmt: skip
    for path in (tls, tls / "tls.key", tls / "tls.crt"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the pod reads them as user 10001
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "tls")
    env = [
        f"{e['name']}={e['value']}"
        for e in container["env"]
        if "value" in e and e["name"] not in ("PORT", "GRPC_PORT")
    ]
    run_args = [
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-v", f"{tls}:{mount}:ro", "-e", f"API_TOKEN={token}",
        *[arg for e in env for arg in ("-e", e)],
    ]  # fmt: skip
    return Case(
        "as k8s/deployment.yaml runs it",
        image,
        run_args,
        container["args"],
        lambda case: str(tls / "tls.crt"),
        lambda case: token,
        False,
    )


def main(image):
    if docker("info", check=False).returncode != 0:
        print("docker-test: no Docker engine answers here (docker info failed): NOTHING WAS TESTED")
        return 0
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    # The compiled parts are in the image: the model's scorer and gunicorn's HTTP parser.
    compiled = "import sentiment_core, gunicorn_h1c"
    docker("run", "--rm", "--entrypoint", "python", image, "-c", compiled)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(shutil.copytree(ROOT, Path(tmp) / "project", ignore=COPY_IGNORE))
        project.chmod(0o755)
        # A host's virtual environment left in the folder: the container must not use it.
        (project / ".venv" / "bin").mkdir(parents=True)
        (project / ".venv" / "bin" / "gunicorn").write_text("#!/bin/sh\nexit 99\n")
        (project / ".venv" / "bin" / "gunicorn").chmod(0o755)
        # The 2020 README's certificate, made on the host with default modes.
        subprocess.run(
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-x509",
             "-days", "365", "-out", "server.crt", "-subj", "/CN=localhost"],
            cwd=project, check=True, capture_output=True,
        )  # fmt: skip
        mounted = {
            "image": image,
            "run_args": ["-v", f"{project}:/external_lib"],
            "command": ["sh", "-c", "cd external_lib && make api-start"],
            "cert": lambda case: str(project / "server.crt"),
            "token": lambda case: (project / ".api_token").read_text().strip(),
            "root_allowed": True,
        }

        def container_cert(case):
            path = Path(tmp) / f"{case.container}.crt"
            docker("cp", f"{case.container}:/run/api/server.crt", str(path))
            return str(path)

        def container_token(case):
            return docker("exec", case.container, "cat", "/run/api/.api_token").stdout.strip()

        def without_certificate():
            for name in ("server.crt", "server.key", ".api_token"):
                (project / name).unlink(missing_ok=True)

        cases = [
            (None, Case("mounted, with the 2020 certificate", **mounted)),
            (without_certificate, Case("mounted, no certificate", **mounted)),
            (None, Case("self-contained", image, [], [], container_cert, container_token, False)),
            (None, as_kubernetes_runs_it(image, Path(tmp))),
        ]
        for prepare, case in cases:
            if prepare:
                prepare()
            case.run()
            print(f"docker-test: {case.name}: passed {json.dumps(case.figures)}", flush=True)
        assert (project / "server.key").stat().st_mode & 0o777 == 0o600
    print(f"docker-test: image {image}: {size / 1e6:.0f} MB; every way passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "model_api"))
