"""SageMaker entry point: run this job's share of the PSA grid with the bundled `psa` package.

The PyTorch training image runs ``python train.py --arch "[L*W]" --modes ... --trials ...`` from
/opt/ml/code, where sagemaker-runner's sourcedir.tar.gz put this file, requirements.txt and a copy
of the package. All the logic lives in psa.commands.sagemaker_job.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from psa.commands.sagemaker_job import main  # noqa: E402 -- after the path set-up above
from psa.commands.sweep import SweepPrinter  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(printer=SweepPrinter))
