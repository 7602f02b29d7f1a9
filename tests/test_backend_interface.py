"""Every backend defines every primitive of the interface; every fused pair has a reference."""
import tinyfw.backend.cpu as cpu
import tinyfw.backend.reference as reference
from tinyfw.backend.interface import FUSED, missing_primitives


def test_cpu_backend_is_complete():
    assert missing_primitives(cpu) == []


def test_every_fused_kernel_has_a_numpy_reference():
    assert [name for name in FUSED if not hasattr(reference, name)] == []
