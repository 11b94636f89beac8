"""The notebook runner detects a request the kernel never picked up (ipykernel #1554), says which cell, and recovers.

The dropped request is simulated on the client side: the first execute_request is recorded as sent but never
reaches the kernel, which therefore stays idle with nothing to run, exactly what a learner sees when the kernel
leaves a request unread in its socket.
"""
import nbformat

from course_utils.harness import notebook_runner


class DropFirstRequest(notebook_runner.StallWatch):
    def __init__(self, kc, log):
        super().__init__(kc, log)
        recorded = kc.shell_channel.send
        self.dropped = []

        def drop_first(msg):
            if msg["header"]["msg_type"] == "execute_request" and not self.dropped:
                self.dropped.append(msg["header"]["msg_id"])
                self.pending = {"msg": msg, "at": notebook_runner.time.monotonic(), "woken": False, "resent": False}
                return None
            return recorded(msg)

        kc.shell_channel.send = drop_first


def test_a_dropped_request_is_detected_named_and_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook_runner, "StallWatch", DropFirstRequest)
    monkeypatch.setattr(notebook_runner, "STALL_S", 1.0)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"),
                                         nbformat.v4.new_code_cell("x = 41"),
                                         nbformat.v4.new_code_cell("print(x + 1)")])
    path = tmp_path / "stall.ipynb"
    nbformat.write(nb, path)
    ran, _ = notebook_runner.execute(path, timeout=60)
    assert ran.cells[2].outputs[0]["text"] == "42\n", "the dropped cell ran once it was sent again"
    events = notebook_runner.last_stalls()
    assert len(events) == 2, events
    assert events[0].startswith("cell 1: the kernel is idle and has not started the request")
    assert "dropped request" in events[0] and "woke it" in events[0]
    assert events[1] == "cell 1: still not started after the wake-up; sent the request again"


def test_a_normal_run_reports_no_stall(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook_runner, "STALL_S", 1.0)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(2.5); print('done')")])
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    ran, _ = notebook_runner.execute(path, timeout=60)
    assert ran.cells[0].outputs[0]["text"] == "done\n"
    assert notebook_runner.last_stalls() == [], "a cell that runs for longer than STALL_S is not a stall"
