"""The line's stages, each with one job, in the order a frame passes them (one way, never back):

:class:`~edge.stages.capture.Capture` (read the source, count each frame in the :class:`~edge.stages.ledger.Ledger`,
admit it or give it its error at once) → :class:`~edge.stages.inference.Inference` (batch, run the engine) →
:class:`~edge.stages.sequencer.Sequencer` (capture order, deadlines) → :class:`~edge.stages.judging.Judge` (the
verdict message) → :class:`~edge.stages.publishing.Publishing` (publish, count, feed the sinks). Capture and
inference run on threads of their own; the sequencer, the judge and publishing on the publishing thread, which owns
the ZeroMQ socket. :class:`edge.pipeline.Pipeline` wires them together and watches them.
"""

from edge.stages.capture import Capture
from edge.stages.inference import End, Inference
from edge.stages.judging import Judge
from edge.stages.ledger import Ledger
from edge.stages.publishing import Publishing
from edge.stages.sequencer import Sequencer

__all__ = ["Capture", "End", "Inference", "Judge", "Ledger", "Publishing", "Sequencer"]
