using Optimum.Core;

namespace Optimum.Inference;

/// <summary>
/// Refuses weights holding NaN or ±Inf when a model is opened for inference (a run trained into divergence):
/// every output of such a model would be garbage, so it fails at load naming the tensor, not per request.
/// </summary>
internal static class FiniteWeights
{
    public static void Require(string modelDir, IReadOnlyList<ParameterInfo> ps, IReadOnlyList<float[]> weights)
    {
        for (int i = 0; i < weights.Count; i++)
        {
            int bad = weights[i].AsSpan().IndexOfAnyExceptInRange(float.MinValue, float.MaxValue);
            if (bad >= 0)
            {
                float v = weights[i][bad];
                throw new InvalidDataException($"'{modelDir}': weight '{ps[i].Name}' holds {(float.IsNaN(v) ? "NaN" : v > 0 ? "+Infinity" : "-Infinity")} at element {bad}: the weights are broken (a diverged training run?).");
            }
        }
    }
}
