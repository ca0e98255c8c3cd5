namespace Optimum.Models;

/// <summary>The distribution head, its negative log-likelihood, and the small pieces every layer uses.</summary>
public sealed partial class TimeSeriesModel
{
    // ---- distribution head ----

    /// <summary>parameter_projection.proj.{i} and the distribution's domain map → (B, T) each.</summary>
    private List<Value> Parameters(Value h)
    {
        var raw = Enumerable.Range(0, c.ParameterCount).Select(i => g.Squeeze(Linear(h, $"parameter_projection.proj.{i}", 1, c.DModel), 2)).ToArray();
        var eps = S(dt == DType.Double ? 2.220446049250313e-16 : 1.1920928955078125e-07);        // torch.finfo(dtype).eps
        return c.DistributionOutput switch
        {
            "student_t" => [SquarePlus(raw[0]) + 2.0, raw[1], g.Max(SquarePlus(raw[2]), eps)],
            "normal" => [raw[0], g.Max(SquarePlus(raw[1]), eps)],
            _ => [SquarePlus(raw[0]), raw[1]],
        };
    }

    private Value SquarePlus(Value x) => (x + g.Sqrt(x * x + 4.0)) * 0.5;

    /// <summary>−log p(y) under the affinely transformed distribution (loc, scale from the scaler), (B, T).</summary>
    private Value NegativeLogLikelihood(IReadOnlyList<Value> ps, Value loc, Value scale, Value y)
    {
        if (c.DistributionOutput == "negative_binomial")
        {
            var (total, logits) = (ps[0], ps[1] + g.Log(scale));                                    // NB scales its logits by log(scale)
            var logProb = total * LogSigmoid(-logits) + y * LogSigmoid(logits) + LogGamma(total + y) - LogGamma(y + 1.0) - LogGamma(total);
            return -logProb;
        }
        var z = ((y - loc) / scale - ps[^2]) / ps[^1];
        Value lp;
        if (c.DistributionOutput == "normal")
            lp = z * z * -0.5 - g.Log(ps[1]) - 0.5 * Math.Log(2 * Math.PI);
        else
        {
            var df = ps[0];
            var norm = g.Log(ps[2]) + g.Log(df) * 0.5 + 0.5 * Math.Log(Math.PI) + LogGamma(df * 0.5) - LogGamma((df + 1.0) * 0.5);
            lp = (df + 1.0) * -0.5 * g.Log(z * z / df + 1.0) - norm;
        }
        return g.Log(scale) - lp;
    }

    private Value LogSigmoid(Value x) => -g.Softplus(-x);

    private Value S(double v) => g.Scalar(v, dt);

    /// <summary>
    /// ln Γ(x) for x &gt; 0 from standard ops: Γ(x) = Γ(x+6) / (x(x+1)…(x+5)), and Stirling's series for
    /// ln Γ(z), z = x + 6 ≥ 6, to the z⁻⁵ term (error below 1/(1680 z⁷) ≈ 2e-9).
    /// </summary>
    private Value LogGamma(Value x)
    {
        var z = x + 6.0;
        var inv = g.Reciprocal(z);
        var inv2 = inv * inv;
        var series = inv * (1.0 / 12 + inv2 * (-1.0 / 360 + inv2 * (1.0 / 1260)));
        var stirling = (z - 0.5) * g.Log(z) - z + 0.5 * Math.Log(2 * Math.PI) + series;
        var shift = g.Log(x * (x + 1.0)) + g.Log((x + 2.0) * (x + 3.0)) + g.Log((x + 4.0) * (x + 5.0));
        return stirling - shift;
    }

    // ---- pieces ----

    private Value Linear(Value x, string p, long nOut, long nIn, bool bias = true)
    {
        var y = g.MatMul(x, g.Transpose(P($"{p}.weight", nOut, nIn)));
        return bias ? y + P($"{p}.bias", nOut) : y;
    }

    private Value LayerNorm(Value x, string p) => g.LayerNormalization(x, P($"{p}.weight", c.DModel), P($"{p}.bias", c.DModel), -1, 1e-5f);

    private Value Heads(Value t, int heads) => g.Transpose(g.Reshape(t, 0, 0, heads, c.DModel / heads), 0, 2, 1, 3);


    private Value Act(Value x) => c.ActivationFunction switch
    {
        "gelu" => g.Gelu(x, tanh: false),
        "gelu_new" => g.Gelu(x, tanh: true),
        "relu" => g.Relu(x),
        "tanh" => g.Tanh(x),
        _ => x * g.Sigmoid(x),                                                                    // silu / swish
    };

    private Value Dropout(Value x, double ratio) => training && ratio > 0 && _seed is { } s ? g.Dropout(x, ratio, true, s, ++_salt) : x;

    /// <summary>LayerDrop: in training, skip the layer (keep <paramref name="input"/>) with probability <paramref name="ratio"/>.</summary>
    private Value LayerDrop(Value input, Value output, double ratio)
    {
        if (!training || ratio <= 0 || _seed is not { } s) return output;
        var u = g.Cast(g.Hash(s, ++_salt, g.Ints(0)), DType.Double) * (1.0 / GraphBuilder.HashModulus);   // (1)
        return g.Where(g.Less(u, g.Scalar(ratio, DType.Double)), input, output);
    }
}
