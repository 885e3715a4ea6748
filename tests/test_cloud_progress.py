import io

from psa.cloud.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_without_a_terminal_progress_is_a_plain_line_per_tenth_and_at_the_end():
    stream = io.StringIO()
    with Progress("sagemaker-cost-estimator", "jobs described", 25, stream) as progress:
        for number in range(25):
            progress.advance(f"psa-job-{number}")
    done = [3, 6, 9, 12, 15, 18, 21, 24, 25]
    expected = [f"sagemaker-cost-estimator: {n}/25 jobs described" for n in done]
    assert stream.getvalue().splitlines() == expected


def test_on_a_terminal_progress_is_a_bar_not_lines():
    stream = Terminal()
    with Progress("sagemaker-results-parser", "jobs read", 3, stream) as progress:
        for job in ("psa-a", "psa-b", "psa-c"):
            progress.advance(job)
    shown = stream.getvalue()
    assert "sagemaker-results-parser: jobs read" in shown
    assert "3/3" in shown
    assert "sagemaker-results-parser: 3/3 jobs read" not in shown


def test_nothing_to_do_shows_no_progress():
    stream = Terminal()
    with Progress("sagemaker-get-training-logs", "jobs' logs downloaded", 0, stream):
        pass
    assert stream.getvalue() == ""
