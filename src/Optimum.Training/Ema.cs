using System.Numerics;
using System.Runtime.InteropServices;
using Optimum.Hub;

namespace Optimum.Training;

/// <summary>
/// An exponential moving average of the weights as diffusers' <c>EMAModel</c> keeps it with <c>use_ema_warmup</c>: after
/// optimizer update n the decay is d = clamp(1 − (1 + k / inv_gamma)^−power, min_decay, max_decay) with
/// k = n − update_after_step − 1 (d = 0 while k ≤ 0, i.e. the average starts as a copy), and each trainable weight
/// moves ema ← ema − (1 − d)(ema − w); buffers and frozen parameters are copied (a frozen weight never changes, so its
/// average is the base weight). Defaults: inv_gamma 1, power 3/4, max decay 0.9999.
/// </summary>
public sealed record EmaOptions
{
    public double MaxDecay { get; init; } = 0.9999;
    public double MinDecay { get; init; }
    public double InvGamma { get; init; } = 1;
    public double Power { get; init; } = 0.75;
    public long UpdateAfterStep { get; init; }

    /// <summary>The decay used by optimizer update <paramref name="update"/> (1-based).</summary>
    public double Decay(long update)
    {
        long k = Math.Max(0, update - UpdateAfterStep - 1);
        if (k <= 0) return 0;
        return Math.Max(MinDecay, Math.Min(MaxDecay, 1 - Math.Pow(1 + k / InvGamma, -Power)));
    }

    public void Validate()
    {
        if (!(MaxDecay is >= 0 and < 1) || !(MinDecay >= 0 && MinDecay <= MaxDecay) || !(InvGamma > 0) || !(Power > 0) || UpdateAfterStep < 0)
            throw new ArgumentException($"EMA needs 0 <= min_decay <= max_decay < 1, inv_gamma > 0, power > 0 and update_after_step >= 0; got {MinDecay}, {MaxDecay}, {InvGamma}, {Power}, {UpdateAfterStep}.");
    }
}

/// <summary>The averaged weights over a <see cref="ParameterStore"/>'s flat layout; saved as ema.safetensors in checkpoints.</summary>
public sealed class EmaWeights
{
    public const string File = "ema.safetensors";
    private readonly ParameterStore _store;
    private readonly float[] _values;

    /// <summary>Starts as a copy of the store's current weights.</summary>
    public EmaWeights(ParameterStore store, EmaOptions options)
    {
        options.Validate();
        (_store, Options) = (store, options);
        _values = store.AllValues.ToArray();
    }

    public EmaOptions Options { get; }

    /// <summary>Moves the average towards the store's weights after optimizer update <paramref name="update"/> (1-based).</summary>
    public void Update(long update)
    {
        double decay = Options.Decay(update);
        float keep = (float)decay, take = (float)(1 - decay);                             // 1 − d in double, as EMAModel computes it
        for (int i = 0; i < _store.Parameters.Count; i++)
        {
            var w = _store.Param(i);
            var e = _values.AsSpan((int)_store.Offset(i), w.Length);
            if (!_store.Parameters[i].Trainable || keep == 0) { w.CopyTo(e); continue; }
            // ema − (1 − d)(ema − w), as EMAModel.step computes it.
            var ve = MemoryMarshal.Cast<float, Vector<float>>(e);
            var vw = MemoryMarshal.Cast<float, Vector<float>>((ReadOnlySpan<float>)w);
            var vt = new Vector<float>(take);
            for (int k = 0; k < ve.Length; k++) ve[k] -= vt * (ve[k] - vw[k]);
            for (int k = ve.Length * Vector<float>.Count; k < e.Length; k++) e[k] -= take * (e[k] - w[k]);
        }
    }

    /// <summary>The averaged weights per parameter.</summary>
    public float[][] Export() => Enumerable.Range(0, _store.Parameters.Count)
        .Select(i => _values.AsSpan((int)_store.Offset(i), (int)_store.Parameters[i].Count).ToArray()).ToArray();

    /// <summary>The averaged weights of parameter <paramref name="i"/> (a view, valid until the next update).</summary>
    public ReadOnlySpan<float> Values(int i) => _values.AsSpan((int)_store.Offset(i), (int)_store.Parameters[i].Count);

    public void Save(string path) => HfWeights.Save(path, _store.Parameters, Values);

    /// <summary>Reads the average back from a checkpoint's file; missing or extra tensors are refused naming the file.</summary>
    public void Load(string path)
    {
        var weights = HfWeights.Load(path, _store.Parameters, out var unused);
        if (unused.Count > 0) throw new InvalidDataException($"'{path}' has tensors the model lacks: {string.Join(", ", unused)}.");
        for (int i = 0; i < weights.Length; i++) weights[i].CopyTo(_values, _store.Offset(i));
    }
}
