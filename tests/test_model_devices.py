"""host_to_device: the CPU keeps the tensor, an accelerator gets a pinned, non-blocking copy."""

import torch

from modeling_crjepa.devices import host_to_device


def test_cpu_and_none_keep_the_tensor():
    tensor = torch.arange(6.0)
    assert host_to_device(tensor, None) is tensor
    on_cpu = host_to_device(tensor, "cpu")
    assert on_cpu.device.type == "cpu" and torch.equal(on_cpu, tensor)


def test_another_device_gets_a_pinned_non_blocking_copy(monkeypatch):
    """The copy to a non-CPU device goes through pinned memory with non_blocking=True (a pageable copy would make the
    host wait); the meta device stands in for an accelerator, pin_memory for the page-locked staging copy."""
    calls = []
    real_to = torch.Tensor.to

    def pin_memory(self):
        calls.append("pin")
        return self

    def to(self, *args, **kwargs):
        calls.append(("to", str(args[0]), kwargs.get("non_blocking")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    moved = host_to_device(torch.arange(6.0), torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == (6,)
    assert calls == ["pin", ("to", "meta", True)]
