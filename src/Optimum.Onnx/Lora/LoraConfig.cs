using System.Text.RegularExpressions;

namespace Optimum.Onnx.Lora;

/// <summary>
/// A LoRA adapter's settings, PEFT's <c>LoraConfig</c> field for field (defaults as PEFT's). Each adapted linear
/// layer computes <c>W x + scaling · B(A(dropout(x)))</c> with A (r, in), B (out, r).
/// </summary>
public sealed record LoraConfig
{
    /// <summary>Rank r of the update.</summary>
    public int R { get; init; } = 8;
    /// <summary>lora_alpha: the update is scaled by lora_alpha / r (lora_alpha / √r with <see cref="UseRslora"/>).</summary>
    public double LoraAlpha { get; init; } = 8;
    /// <summary>Dropout on the layer input before A, in training only (the builder's seeded counter-hash dropout).</summary>
    public double LoraDropout { get; init; }
    /// <summary>Module names or suffixes: a module is adapted when its name equals one or ends with "." + one.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];
    /// <summary>PEFT's target_modules given as one string: a regex the whole module name must match. Overrides <see cref="TargetModules"/>.</summary>
    public string? TargetModulesRegex { get; init; }
    /// <summary>True when the base weights are stored (in, out) (GPT-2's Conv1D); the graph finds each layer's layout itself, this is what PEFT records.</summary>
    public bool FanInFanOut { get; init; }
    /// <summary>Which biases train; only "none" is supported.</summary>
    public string Bias { get; init; } = "none";
    /// <summary>Rank-stabilised LoRA: scaling lora_alpha / √r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>PEFT's task_type, e.g. "CAUSAL_LM", "SEQ_2_SEQ_LM" (null when not given).</summary>
    public string? TaskType { get; init; }
    /// <summary>The base model the adapter belongs to (written to adapter_config.json).</summary>
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>PEFT's inference_mode: true in adapters saved for use rather than further training.</summary>
    public bool InferenceMode { get; init; }

    /// <summary>The factor of the update B·A.</summary>
    public double Scaling => UseRslora ? LoraAlpha / Math.Sqrt(R) : LoraAlpha / R;

    /// <summary>PEFT's rule: a regex target must match the whole name; a list entry must equal it or be its last dotted parts.</summary>
    public bool Matches(string module) => TargetModulesRegex is { } re
        ? Regex.IsMatch(module, $"^(?:{re})$", RegexOptions.CultureInvariant)
        : TargetModules.Any(t => module == t || module.EndsWith("." + t, StringComparison.Ordinal));

    /// <summary>Refuses settings this implementation cannot honour, naming the field and the value.</summary>
    public void Validate()
    {
        if (R <= 0) throw new ArgumentException($"LoRA r must be positive, got {R}.", nameof(R));
        if (!double.IsFinite(LoraAlpha)) throw new ArgumentException($"lora_alpha must be finite, got {LoraAlpha}.", nameof(LoraAlpha));
        if (LoraDropout < 0 || LoraDropout >= 1) throw new ArgumentException($"lora_dropout must be in [0, 1), got {LoraDropout}.", nameof(LoraDropout));
        if (Bias != "none") throw new NotSupportedException($"LoRA bias '{Bias}' is not supported (only \"none\": biases stay frozen).");
        if (TargetModulesRegex is null && TargetModules.Count == 0)
            throw new ArgumentException("LoRA target_modules is empty: name the linear layers to adapt (e.g. [\"c_attn\"] for GPT-2, [\"q\", \"v\"] for T5).", nameof(TargetModules));
        if (TargetModulesRegex is { } re)
            try { _ = new Regex(re); }
            catch (ArgumentException e) { throw new ArgumentException($"LoRA target_modules regex '{re}' is invalid: {e.Message}", nameof(TargetModulesRegex), e); }
    }
}

/// <summary>One adapted linear layer: the module name, its features and the layout of its base weight.</summary>
/// <param name="Name">Torch module name, e.g. "transformer.h.0.attn.c_attn".</param>
/// <param name="In">Input features (A is (r, In)).</param>
/// <param name="Out">Output features (B is (Out, r)).</param>
/// <param name="FanInFanOut">True when the base weight is stored (In, Out) (HF Conv1D), false for (Out, In) (nn.Linear).</param>
public sealed record LoraModule(string Name, long In, long Out, bool FanInFanOut)
{
    /// <summary>The base weight's parameter name.</summary>
    public string WeightName => Name + ".weight";
    /// <summary>Parameter name of A (r, In), PEFT's key without the adapter name.</summary>
    public string AName => Name + ".lora_A.weight";
    /// <summary>Parameter name of B (Out, r).</summary>
    public string BName => Name + ".lora_B.weight";
    /// <summary>Shape of the base weight as stored.</summary>
    public long[] WeightShape => FanInFanOut ? [In, Out] : [Out, In];
    /// <summary>Trainable values LoRA adds to this layer at rank <paramref name="r"/>.</summary>
    public long ParameterCount(int r) => r * (In + Out);
}
