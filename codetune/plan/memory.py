"""Per-GPU peak training memory, itemised, from a model's shape alone (pure functions, no torch).

What is counted, and where the formulas come from:
- Weights, gradients, optimizer states: bytes per parameter by dtype, the "model memory anatomy" split of
  the Hugging Face docs (Performance and Scalability: "Anatomy of Model's Memory"), for the dtypes
  `codetune train` really uses (`weight_bytes=None`): full fine-tuning keeps fp32 master weights and runs
  the forward under bf16/fp16 autocast, so a parameter costs 4 (weight) + 4 (grad) + 8 (two fp32 AdamW
  states), plus the half-precision copy autocast makes of every matmul weight, which backward keeps
  (2 bytes per matmul weight, "autocast weight copies"); a LoRA base is loaded in the compute dtype.
  torch's AdamW keeps its two states in the parameter's dtype (an explicit `weight_bytes=2` full setup,
  pure-bf16 training, is 2+2+4 bytes/param with no copies); bitsandbytes' 8-bit
  AdamW keeps 1 byte per state plus a fp32 absmax per 256 values, and 32-bit states for tensors under
  4096 values; transformers' Adafactor keeps row + column second moments for matrices and no first moment.
- QLoRA (Dettmers et al. 2023): NF4 weights 0.5 byte/param plus one fp32 absmax per 64 values, or with
  double quantization an 8-bit absmax per 64 and one fp32 constant per 256 absmaxes (0.516 byte/param).
  Embeddings, lm_head, norms and biases stay unquantised and are upcast to fp32 by PEFT's
  `prepare_model_for_kbit_training`, which also makes the residual stream fp32. LoRA adapters are fp32
  (PEFT's `autocast_adapter_dtype`), so each adapter parameter costs 4 (weight) + 4 (grad) + 8 (AdamW).
- Activations: the tensors autograd saves for backward, counted per layer and per token after Korthikanti
  et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sbh(34 + 5as/h) for GPT with
  dropout), refined for what transformers actually saves: autocast runs layer_norm/softmax/pow in fp32 and
  gives every linear its own half-precision copy of an fp32 input; frozen linears (LoRA, QLoRA) save no
  input; each LoRA adapter saves its own dropout copy of the input; SDPA/flash saves q, k, v, the output
  and a fp32 log-sum-exp (no seq^2 scores), eager attention saves fp32 softmax probabilities (heads x seq^2);
  GPT-2/CodeGen's Python `gelu_new` saves four intermediates. Gradient checkpointing keeps one hidden state
  per layer and recomputes one layer at a time during backward (Chen et al. 2016).
- Logits and loss: transformers' ForCausalLMLoss upcasts logits to fp32; log_softmax's output, its gradient
  and the incoming gradient coexist in backward: 12 bytes x tokens x vocab. With the trainer's chunked
  cross-entropy (`chunked_loss`, train/fused_loss.py) one chunk of 1024 tokens holds fp32 logits and their
  gradient (8 bytes x 1024 x vocab) while the input gradient (compute dtype) and, for a trained head, an
  fp32 weight gradient are kept from forward to backward.
- Sharding across N GPUs (Rajbhandari et al. 2020, ZeRO): DDP replicates everything and adds gradient
  buckets; ZeRO-2 shards gradients and fp32 optimizer states (DeepSpeed keeps a fp32 master copy: 12
  bytes/param of Adam state); ZeRO-3 and FSDP also shard weights and gather about two layers at a time.
- Peak = max(start of backward: weights + states + activations + logits/loss or one layer's backward
  workspace, optimizer step: weights + grads + states + step temporaries). `peak_allocated` is what
  `torch.cuda.max_memory_allocated` reports; the fit verdict adds the CUDA context and allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from codetune.plan.shapes import ModelShape, ParamTensor, matmul_params, param_tensors

GIB = 1024**3
CUDA_CONTEXT_BYTES = 0.5 * GIB  # CUDA context + cuBLAS/cuDNN handles; not in max_memory_allocated
ALLOCATOR_SLACK = 0.08  # caching-allocator fragmentation on top of the allocated peak
NF4_BYTES = 0.5
NF4_ABSMAX_BYTES = 4 / 64
NF4_DOUBLE_QUANT_BYTES = 1 / 64 + 4 / (64 * 256)


@dataclass(frozen=True)
class Setup:
    """One training configuration, as the memory formula sees it."""

    method: str = "full"  # full | lora | qlora
    micro_batch: int = 1
    seq_len: int = 1024
    grad_accum: int = 1
    # bytes per loaded weight (bf16/fp16 2, fp32 4); None: as `codetune train` loads them (fp32 master
    # weights for full fine-tuning, the compute dtype for a LoRA base)
    weight_bytes: int | None = None
    compute_bytes: int = 2  # activation dtype
    autocast: bool = True  # HF Trainer's bf16/fp16 flags run the forward under torch.autocast
    optimizer: str = "adamw"  # adamw (fused, states in param dtype) | adamw_8bit | adafactor
    gradient_checkpointing: bool = False
    attention: str = "sdpa"  # sdpa | flash_attention_2 | eager
    lora_r: int = 16
    lora_targets: tuple[str, ...] | str = "all-linear"
    lora_dropout: float = 0.05
    double_quant: bool = True
    kbit_upcast: bool = True  # prepare_model_for_kbit_training upcasts unquantised params to fp32
    num_gpus: int = 1
    engine: str = "ddp"  # ddp | fsdp | zero2 | zero3
    dropout_mask_bytes: int = 1  # CUDA's fused dropout keeps a bool mask; CPU's keeps a float one
    chunked_loss: bool = False  # the trainer's chunked cross-entropy instead of whole-batch fp32 logits

    @property
    def param_bytes(self) -> int:
        """Bytes per loaded weight, resolved."""
        if self.weight_bytes is not None:
            return self.weight_bytes
        return 4 if self.method == "full" else self.compute_bytes

    @property
    def autocast_copies(self) -> bool:
        """Autocast casts each fp32 matmul weight to the compute dtype and backward keeps the copy."""
        return self.method == "full" and self.autocast and self.param_bytes > self.compute_bytes

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    def with_(self, **changes) -> Setup:
        return replace(self, **changes)


@dataclass
class MemoryEstimate:
    items: dict[str, float]  # bytes per GPU, in display order
    backward_peak: float
    step_peak: float
    setup: Setup
    notes: list[str] = field(default_factory=list)

    @property
    def peak_allocated(self) -> float:
        return max(self.backward_peak, self.step_peak)

    @property
    def peak_phase(self) -> str:
        return "backward" if self.backward_peak >= self.step_peak else "optimizer step"

    @property
    def overhead(self) -> float:
        return CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * self.peak_allocated

    @property
    def total(self) -> float:
        """What the GPU must hold: allocated peak + allocator slack + CUDA context."""
        return self.peak_allocated + self.overhead

    def gib(self) -> dict[str, float]:
        return {k: v / GIB for k, v in self.items.items()}


# --- parameters -------------------------------------------------------------------------------------------

def is_lora_target(t: ParamTensor, setup: Setup) -> bool:
    if setup.method == "full" or t.kind != "linear":
        return False
    return setup.lora_targets == "all-linear" or t.module in setup.lora_targets


def lora_tensors(shape: ModelShape, setup: Setup) -> list[ParamTensor]:
    """LoRA A (r x in) and B (out x r) for every targeted linear layer."""
    out = []
    for t in param_tensors(shape):
        if is_lora_target(t, setup):
            d_out, d_in = t.dims
            out.append(ParamTensor(t.name + ".lora_A", (setup.lora_r, d_in), "lora", t.module, t.count))
            out.append(ParamTensor(t.name + ".lora_B", (d_out, setup.lora_r), "lora", t.module, t.count))
    return out


def nf4_bytes_per_param(double_quant: bool) -> float:
    return NF4_BYTES + (NF4_DOUBLE_QUANT_BYTES if double_quant else NF4_ABSMAX_BYTES)


def weight_bytes(shape: ModelShape, setup: Setup) -> float:
    tensors = param_tensors(shape)
    if setup.method != "qlora":
        return sum(t.total for t in tensors) * setup.param_bytes
    other_b = 4 if setup.kbit_upcast else setup.compute_bytes
    quantised = sum(t.total for t in tensors if t.kind == "linear")
    other = sum(t.total for t in tensors if t.kind != "linear")
    return quantised * nf4_bytes_per_param(setup.double_quant) + other * other_b


def trainable(shape: ModelShape, setup: Setup) -> tuple[list[ParamTensor], int]:
    """Trainable tensors and their dtype size: all weights for full, fp32 adapters otherwise."""
    if setup.method == "full":
        return param_tensors(shape), setup.param_bytes
    return lora_tensors(shape, setup), 4


def optimizer_state_bytes(tensors: list[ParamTensor], param_b: int, optimizer: str) -> float:
    total = 0.0
    for t in tensors:
        if optimizer == "adamw":
            total += 2 * t.total * param_b
        elif optimizer == "adamw_8bit":
            # bitsandbytes: 8-bit blockwise states for tensors of >= 4096 values, fp32 states below
            total += t.total * (2 + 2 * 4 / 256) if t.numel >= 4096 else 8 * t.total
        elif optimizer == "adafactor":
            factored = len(t.dims) >= 2
            total += (sum(t.dims[-2:]) if factored else t.numel) * t.count * param_b
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
    return total


def step_temp_bytes(tensors: list[ParamTensor], param_b: int, optimizer: str) -> float:
    """Transient memory of one optimizer step. Fused AdamW (HF Trainer's default) and bitsandbytes' kernels
    update in place; transformers' Adafactor makes fp32 copies of one tensor's grad, param and update."""
    if optimizer != "adafactor" or not tensors:
        return 0.0
    return max(t.numel for t in tensors) * (12 if param_b < 4 else 8)


# --- activations ------------------------------------------------------------------------------------------

def _modules(shape: ModelShape) -> dict[str, list[str]]:
    if shape.fused_qkv:
        qkv = ["qkv_proj"] if shape.model_type == "codegen" else ["c_attn"]
        out = ["out_proj"] if shape.model_type == "codegen" else ["c_proj"]
    else:
        qkv, out = ["q_proj", "k_proj", "v_proj"], ["o_proj"]
    if shape.gated_mlp:
        up, down = ["gate_proj", "up_proj"], ["down_proj"]
    elif shape.model_type == "codegen":
        up, down = ["fc_in"], ["fc_out"]
    else:
        up, down = ["c_fc"], ["c_proj"]
    return {"qkv": qkv, "out": out, "up": up, "down": down}


class _Saved:
    """Bytes autograd saves for one token of one decoder layer, under one Setup."""

    def __init__(self, shape: ModelShape, setup: Setup):
        self.shape, self.setup = shape, setup
        self.e = setup.compute_bytes
        self.ac = setup.autocast and self.e < 4
        upcast = setup.method == "qlora" and setup.kbit_upcast
        self.res_b = 4 if (upcast or setup.param_bytes == 4) else self.e  # residual-stream dtype
        self.full = setup.method == "full"
        self.targets = set() if self.full else (
            {m for ms in _modules(shape).values() for m in ms} if setup.lora_targets == "all-linear"
            else set(setup.lora_targets))

    def norm(self) -> tuple[float, int]:
        """Saved bytes of a norm, and the dtype size of its output."""
        h = self.shape.hidden
        if self.shape.norm == "layernorm":
            # autocast runs layer_norm in fp32: it saves an fp32 copy of its input (+ fp32 mean and rstd)
            return (4 * h + 8, 4) if self.ac else (self.res_b * h + 8, self.res_b)
        weight_b = 4 if (self.setup.method == "qlora" and self.setup.kbit_upcast) else self.setup.param_bytes
        # RMSNorm (Llama): x.float() and rsqrt saved, x_hat saved by the weight multiply when trained
        return 4 * h + 4 + (self.res_b * h if self.full else 0), max(weight_b, self.res_b)

    def linears(self, modules: list[str], d_in: int, x_b: int, x_saved: bool) -> float:
        """Bytes saved by a group of linear layers reading one tensor of dtype size x_b."""
        e, total = self.e, 0.0
        if self.full:
            if self.ac and x_b != e:
                total += e * d_in * len(modules)  # each call casts its own half copy
            elif not x_saved:
                total += x_b * d_in
        for m in modules:
            if m in self.targets:
                in_b = e if self.ac else 4  # adapters are fp32; autocast casts their input to half
                total += in_b * d_in + self.setup.lora_r * in_b
                if self.setup.lora_dropout > 0:
                    total += d_in * self.setup.dropout_mask_bytes
        return total

    def attention(self, seq_len: int) -> tuple[float, float]:
        """Saved bytes of the attention core, and bytes saved for the output projection's input."""
        s, e, sh = seq_len, self.e, self.shape
        if self.setup.attention != "eager" and not sh.eager_only:
            return e * (sh.q_dim + 2 * sh.kv_dim) + e * sh.q_dim + 4 * sh.heads, 0.0
        qk_b = 4 if sh.fp32_attention_scores else e
        kv = sh.q_dim if not sh.fused_qkv else sh.kv_dim  # eager repeat_kv expands k and v to every head
        saved = qk_b * (sh.q_dim + kv) + e * kv
        saved += 4 * sh.heads * s + (e * sh.heads * s if e < 4 else 0)  # fp32 softmax + its half copy
        if sh.attn_dropout > 0:
            saved += sh.heads * s * (self.setup.dropout_mask_bytes + e)
        # eager transposes the output into a fresh contiguous tensor, which a trained o_proj saves
        return saved, e * sh.q_dim if self.full else 0.0

    def mlp_act(self) -> tuple[float, int]:
        f, e = self.shape.intermediate, self.e
        if self.shape.gated_mlp:
            return 3 * e * f, e  # act(gate) input, act output and up output kept for the product
        if self.shape.activation in {"gelu_new", "gelu_fast", "gelu_python"}:
            # 0.5*x*(1+tanh(c*(x+0.044715*x^3))): autocast runs pow in fp32, so the chain turns fp32
            return (12 * f + e * f, 4) if self.ac else (4 * e * f, e)
        return e * f, e

    def layer(self, seq_len: int) -> float:
        sh = self.shape
        h, f, mods = sh.hidden, sh.intermediate, _modules(sh)
        norm_saved, x_b = self.norm()
        total = norm_saved + self.linears(mods["qkv"], h, x_b, x_saved=False)
        attn, out_input = self.attention(seq_len)
        total += attn + out_input + self.linears(mods["out"], sh.q_dim, self.e, x_saved=True)
        if sh.resid_dropout > 0:
            total += h * self.setup.dropout_mask_bytes * (1 if sh.parallel_block else 2)
        if sh.parallel_block:
            total += self.linears(mods["up"], h, x_b, x_saved=not (self.ac and x_b != self.e))
        else:
            norm_saved, x_b = self.norm()
            total += norm_saved + self.linears(mods["up"], h, x_b, x_saved=False)
        act_saved, act_b = self.mlp_act()
        total += act_saved + self.linears(mods["down"], f, act_b, x_saved=False)
        return total

    def outside_layers(self) -> float:
        """Per token, outside the decoder layers: embedding dropout, final norm, lm_head input."""
        h = self.shape.hidden
        norm_saved, x_b = self.norm()
        head_input = 0.0
        if self.full:
            head_input = self.e * h if (self.ac and x_b != self.e) else x_b * h
        elif not self.setup.gradient_checkpointing:
            # frozen embeddings: nothing before the first adapter needs a gradient, so the first norm saves
            # nothing (checkpointing turns on enable_input_require_grads, which undoes this)
            head_input -= norm_saved
            if self.setup.lora_dropout > 0:  # ... and the first layer's q/k/v adapters keep no dropout mask
                qkv = [m for m in _modules(self.shape)["qkv"] if m in self.targets]
                head_input -= len(qkv) * h * self.setup.dropout_mask_bytes
        embd = h * self.setup.dropout_mask_bytes if self.shape.embd_dropout > 0 else 0
        return embd + norm_saved + head_input

    def workspace(self, seq_len: int) -> float:
        """Transient bytes per token while one layer runs backward."""
        sh, e = self.shape, self.e
        mlp = (3 if sh.gated_mlp else 2) * max(e, self.mlp_act()[1]) * sh.intermediate
        if self.setup.attention == "eager" or sh.eager_only:
            attn = (e + 8) * sh.heads * seq_len
        else:
            attn = e * (2 * sh.q_dim + 2 * sh.kv_dim) + 4 * sh.q_dim
        return max(mlp, attn) + 2 * e * sh.hidden


def activation_bytes(shape: ModelShape, setup: Setup) -> float:
    """Activations saved for backward by one micro-batch on one GPU (including one recomputed layer
    under gradient checkpointing)."""
    saved = _Saved(shape, setup)
    per_layer = saved.layer(setup.seq_len)
    if setup.gradient_checkpointing:
        per_token = shape.layers * saved.res_b * shape.hidden + per_layer
    else:
        per_token = shape.layers * per_layer
    total = (per_token + saved.outside_layers()) * setup.tokens
    if setup.attention == "eager" or shape.eager_only:
        total += setup.compute_bytes * setup.micro_batch * setup.seq_len**2  # the 4-D causal mask
    return total


def logits_bytes(shape: ModelShape, setup: Setup) -> float:
    if not setup.chunked_loss:
        return 12.0 * setup.tokens * shape.vocab
    chunk = min(setup.tokens, 1024)  # train/fused_loss.py CHUNK_TOKENS
    head_grad = 4 * shape.vocab * shape.hidden if setup.method == "full" else 0
    return 8.0 * chunk * shape.vocab + setup.compute_bytes * setup.tokens * shape.hidden + head_grad


def autocast_copy_bytes(shape: ModelShape, setup: Setup) -> float:
    """Half-precision copies of the fp32 matmul weights that autocast makes and backward keeps."""
    return setup.compute_bytes * matmul_params(shape) if setup.autocast_copies else 0.0


def workspace_bytes(shape: ModelShape, setup: Setup) -> float:
    saved = _Saved(shape, setup)
    ws = saved.workspace(setup.seq_len) * setup.tokens
    if setup.method == "qlora":  # bitsandbytes dequantises one weight matrix (fwd) and again (bwd)
        largest = max(t.numel for t in param_tensors(shape) if t.kind == "linear")
        ws += 2 * largest * setup.compute_bytes
    return ws


# --- the whole picture, per engine ------------------------------------------------------------------------

def _layer_params(shape: ModelShape) -> int:
    return sum(t.numel for t in param_tensors(shape) if t.count == shape.layers)


def estimate(shape: ModelShape, setup: Setup) -> MemoryEstimate:
    """Itemised per-GPU peak for one configuration."""
    n, engine = setup.num_gpus, setup.engine if setup.num_gpus > 1 else "ddp"
    tensors, param_b = trainable(shape, setup)
    n_trainable = sum(t.total for t in tensors)
    weights = weight_bytes(shape, setup)
    adapters = n_trainable * 4 if setup.method != "full" else 0.0
    grads = n_trainable * param_b
    states = optimizer_state_bytes(tensors, param_b, setup.optimizer)
    step_temp = step_temp_bytes(tensors, param_b, setup.optimizer)
    notes: list[str] = []
    extra_name, extra = "", 0.0
    layer_w = _layer_params(shape) * (setup.compute_bytes if setup.method != "qlora" else 0.6)
    if engine == "ddp" and n > 1:
        extra_name, extra = "DDP gradient buckets", grads
    elif engine in {"zero2", "zero3"}:
        # DeepSpeed keeps fp32 master weights + fp32 states, sharded; grads reduce into fp32 partitions
        master = 4 * n_trainable if param_b < 4 else 0
        states = (states * (4 / param_b if setup.optimizer == "adamw" else 1) + master) / n
        grads = 4 * n_trainable / n
        extra_name = "ZeRO buckets" if engine == "zero2" else "ZeRO-3 gathered layers"
        extra = 2 * shape.hidden**2 * 4 if engine == "zero2" else 2 * layer_w
        if engine == "zero3":
            weights /= n
        notes.append(f"{engine}: fp32 master weights and optimizer states sharded over {n} GPUs")
    elif engine == "fsdp":
        weights, grads, states, step_temp = weights / n, grads / n, states / n, step_temp / n
        if setup.method != "full":
            adapters /= n
        extra_name, extra = "FSDP gathered layers", 2 * layer_w + (layer_w if setup.method == "full" else 0)
        notes.append(f"fsdp: weights, grads and states sharded over {n} GPUs, two layers gathered at a time")
    activations = activation_bytes(shape, setup)
    copies = autocast_copy_bytes(shape, setup) / (n if engine in {"fsdp", "zero3"} else 1)
    logits = logits_bytes(shape, setup)
    workspace = workspace_bytes(shape, setup)
    base = weights + (adapters if setup.method != "full" else 0.0) + states + extra
    grads_held = grads if (setup.grad_accum > 1 or engine == "ddp" and n > 1) else 0.0
    backward_peak = base + grads_held + copies + activations + max(logits, workspace)
    step_peak = base + grads + step_temp
    items = {
        "weights": weights,
        "LoRA adapters (fp32)": adapters if setup.method != "full" else 0.0,
        "gradients": grads,
        "optimizer states": states,
        "autocast weight copies": copies,
        "activations": activations,
        "logits + loss (fp32)" if not setup.chunked_loss else "chunked loss": logits,
        "backward workspace": workspace,
        "optimizer step temporaries": step_temp,
    }
    if extra_name:
        items[extra_name] = extra
    if setup.method == "full" and setup.param_bytes == 2 and setup.optimizer == "adamw":
        notes.append("AdamW states are kept in the weights' dtype (torch's behaviour for bf16/fp16 weights)")
    if setup.autocast_copies:
        notes.append("full fine-tuning keeps fp32 master weights and trains under autocast (as codetune train "
                     "does); autocast's half copies of the matmul weights live until backward")
    return MemoryEstimate(items, backward_peak, step_peak, setup, notes)


def largest_micro_batch(shape: ModelShape, setup: Setup, budget_bytes: float, limit: int = 1024) -> int:
    """Largest micro-batch whose total (allocated + overhead) fits the budget; 0 if none does."""
    lo, hi = 0, 1
    while hi <= limit and estimate(shape, setup.with_(micro_batch=hi)).total <= budget_bytes:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(shape, setup.with_(micro_batch=mid)).total <= budget_bytes:
            lo = mid
        else:
            hi = mid
    return lo
