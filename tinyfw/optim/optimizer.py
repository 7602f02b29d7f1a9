"""Optimizer base: parameter groups, per-parameter state, zero_grad, state dicts (PyTorch layout)."""
import numpy as np

from ..backend import backend_for
from ..tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise TypeError(f"{type(self).__name__}: every parameter must be a Tensor "
                                    "with requires_grad=True")
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of state arrays / numbers

    def add_param_group(self, group):
        """Add ``{'params': [...], **options}`` (missing options: the constructor's defaults),
        as PyTorch does: how gradual unfreezing hands newly trainable parameters over. A
        parameter already in this optimizer is an error."""
        group = {**self.defaults, **group, "params": list(group["params"])}
        present = {id(p) for p in self._params()}
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__}.add_param_group: every parameter must be "
                                "a Tensor with requires_grad=True")
            if id(p) in present:
                raise ValueError(f"{type(self).__name__}.add_param_group: a parameter of shape "
                                 f"{p.shape} is already in this optimizer")
            present.add(id(p))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """``{'state': {index: {name: ndarray | number}}, 'param_groups': [...]}``."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for pid, s in self.state.items():
            if pid in index:
                state[index[pid]] = {k: (backend_for(_device(v)).to_numpy(v)
                                         if not isinstance(v, (int, float)) else v)
                                     for k, v in s.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        params = self._params()
        groups = state_dict.get("param_groups")
        if groups is None or "state" not in state_dict:
            raise ValueError(f"{type(self).__name__}.load_state_dict: not an optimizer state "
                             "dict (needs 'state' and 'param_groups')")
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved state has "
                             f"{[len(g['params']) for g in groups]} parameters per group, this "
                             f"optimizer {[len(g['params']) for g in self.param_groups]}")
        for saved, group in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    group[k] = tuple(v) if isinstance(v, list) else v
        self.state = {}
        for key, s in state_dict["state"].items():
            p = params[int(key)]
            entry = {}
            for k, v in s.items():
                if isinstance(v, (int, float)) or np.ndim(v) == 0 and k == "step":
                    entry[k] = v if isinstance(v, (int, float)) else v.item()
                else:
                    arr = np.asarray(v)
                    if arr.shape != p.shape:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: state '{k}' "
                                         f"of parameter {key} has shape {arr.shape}, the "
                                         f"parameter {p.shape}")
                    entry[k] = backend_for(p.device).from_numpy(arr.astype(p.dtype))
            self.state[id(p)] = entry

    def step(self):
        raise NotImplementedError

    def _check_devices(self, p, state):
        """ValueError unless p's gradient and state arrays are on p's device (a parameter
        moved after its optimizer state was made, or a gradient set by hand on another one)."""
        where = f"{type(self).__name__}.step"
        if p.grad.device != p.device:
            raise ValueError(f"{where}: a parameter of shape {p.shape} is on {p.device} but its "
                             f"gradient is on {p.grad.device}")
        for name, v in state.items():
            if not isinstance(v, (int, float, np.generic)) and _device(v) != p.device:
                raise ValueError(f"{where}: the state {name!r} of a parameter of shape {p.shape} "
                                 f"is on {_device(v)} but the parameter is on {p.device}; "
                                 "move the model before creating the optimizer or loading "
                                 "its state")


def _device(array):
    from ..backend import device_of_array
    return device_of_array(array)
