# The harness checks itself: every machine-API call the stories rely on,
# on two machines.  Written against the NixOS test driver's API only.
# (`os` is a driver global, but the driver's type hints do not declare it.)
import os

start_all()

with subtest("boot: units come up and ports open"):
    server.wait_for_unit("multi-user.target")
    server.wait_for_unit("harness-selftest-http.service")
    server.wait_for_open_port(8080)
    client.wait_for_unit("multi-user.target")

with subtest("LAN: client reaches server by name"):
    out = client.succeed("curl -sf http://server:8080/")
    assert "hello from server" in out, out
    client.succeed("ping -c1 -W2 server")

with subtest("/etc as on NixOS: declared files are read-only links into the store"):
    server.succeed("test -L /etc/hosts && test -L /etc/systemd/system")
    t.assertEqual(server.succeed("readlink -f /etc/hosts")[:11], "/nix/store/")
    server.fail("echo '# edited' >> /etc/hosts")
    server.fail("touch /etc/systemd/system/new.service")
    server.succeed("test -x /run/booted-system/bin/switch-to-configuration")
    server.succeed("test -d /run/booted-system/specialisation")
    t.assertEqual(server.succeed("readlink -f /run/current-system"),
                  server.succeed("readlink -f /run/booted-system"))

with subtest("execute returns status and stdout"):
    status, out = server.execute("echo out; echo err >&2; exit 3")
    assert status == 3, status
    assert out == "out\n", repr(out)
    status, out = server.execute("true")
    assert (status, out) == (0, ""), (status, out)
    server.fail("false")
    t.assertEqual(server.succeed("echo a", "echo b"), "a\nb\n")

with subtest("succeed raises with the output in the message"):
    try:
        server.succeed("echo to-stdout; echo to-stderr >&2; exit 7")
    except Exception as e:
        msg = str(e)
        assert "exit code 7" in msg and "to-stdout" in msg and "to-stderr" in msg, msg
    else:
        raise AssertionError("succeed() did not raise")

with subtest("a background process does not hold a command"):
    server.succeed("sleep 300 &")

with subtest("unit info"):
    info = server.get_unit_info("harness-selftest-http.service")
    t.assertEqual(info["ActiveState"], "active")
    status, _ = server.systemctl("is-active harness-selftest-http.service")
    t.assertEqual(status, 0)

with subtest("block cuts the LAN, unblock restores it"):
    server.block()
    client.fail("curl -sf --max-time 3 http://server:8080/")
    server.unblock()
    client.wait_until_succeeds("curl -sf --max-time 3 http://server:8080/", timeout=60)

with subtest("copy_from_host puts a file in the machine"):
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("copied\n")
    server.copy_from_host(f.name, "/srv/www/copied.txt")
    t.assertEqual(client.succeed("curl -sf http://server:8080/copied.txt"), "copied\n")
    os.unlink(f.name)

with subtest("crash then start boots the same disk again"):
    server.succeed("echo persisted > /var/lib/marker && sync")
    server.crash()
    client.wait_until_fails("curl -sf --max-time 2 http://server:8080/", timeout=60)
    server.start()
    server.wait_for_unit("harness-selftest-http.service")
    server.wait_for_open_port(8080)
    t.assertEqual(server.succeed("cat /var/lib/marker"), "persisted\n")
    client.wait_until_succeeds("curl -sf --max-time 3 http://server:8080/", timeout=60)

with subtest("wait_until_succeeds and sleep"):
    server.succeed("rm -f /tmp/later; (sleep 2; touch /tmp/later) >/dev/null 2>&1 &")
    server.wait_until_succeeds("test -e /tmp/later", timeout=30)
    server.sleep(1)

with subtest("clean shutdown"):
    client.shutdown()
    server.succeed("true")
