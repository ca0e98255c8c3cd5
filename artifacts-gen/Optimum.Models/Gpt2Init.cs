using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>GPT-2's initialisation as HF's GPT2PreTrainedModel._init_weights does it, from a seed.</summary>
public static class Gpt2Init
{
    /// <summary>
    /// Weights and embeddings ~ N(0, initializer_range), the residual projections (<c>c_proj.weight</c>)
    /// ~ N(0, initializer_range / sqrt(2 n_layer)), biases 0, LayerNorm weights 1. Deterministic in
    /// <paramref name="seed"/> and the parameter order.
    /// </summary>
    public static float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, Gpt2Config c, int seed)
    {
        var rng = new Random(seed);
        return parameters.Select(p =>
        {
            bool ln = p.Name.Contains(".ln_", StringComparison.Ordinal);
            if (p.Name.EndsWith(".bias", StringComparison.Ordinal)) return new float[p.Count];
            if (ln) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            var std = p.Name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? c.InitializerRange / Math.Sqrt(2.0 * c.NLayer) : c.InitializerRange;
            return HfWeights.Normal(rng, p.Count, std);
        }).ToArray();
    }
}
