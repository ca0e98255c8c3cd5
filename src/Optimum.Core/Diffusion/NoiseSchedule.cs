namespace Optimum.Core.Diffusion;

/// <summary>
/// The DDPM noise schedule as diffusers' schedulers build it (float32 like torch): betas, alphas = 1 − betas and
/// their running product ᾱ_t, and the forward process q(x_t | x_0) = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε (<c>add_noise</c>).
/// Built from a <c>scheduler_config.json</c> by <see cref="SchedulerConfig.Build"/>, or directly by the factories.
/// </summary>
public sealed class NoiseSchedule
{
    private readonly float[] _betas;
    private readonly float[] _alphasCumprod;

    private NoiseSchedule(float[] betas)
    {
        _betas = betas;
        _alphasCumprod = new float[betas.Length];
        double product = 1;                                                              // torch's CPU cumprod accumulates float in double
        for (int t = 0; t < betas.Length; t++) _alphasCumprod[t] = (float)(product *= 1f - betas[t]);
    }

    /// <summary>diffusers' "linear" schedule: <paramref name="steps"/> betas evenly spaced from <paramref name="betaStart"/> to <paramref name="betaEnd"/> (torch.linspace in float32).</summary>
    public static NoiseSchedule Linear(int steps = 1000, double betaStart = 1e-4, double betaEnd = 0.02)
    {
        CheckRange("linear", steps, betaStart, betaEnd);
        return new NoiseSchedule(LinspaceF32(betaStart, betaEnd, steps));
    }

    /// <summary>
    /// diffusers' "scaled_linear" schedule (latent diffusion): betas = linspace(√beta_start, √beta_end, steps)², the
    /// linspace in float32 as torch computes it, then squared in float32.
    /// </summary>
    public static NoiseSchedule ScaledLinear(int steps = 1000, double betaStart = 0.00085, double betaEnd = 0.012)
    {
        CheckRange("scaled_linear", steps, betaStart, betaEnd);
        var roots = LinspaceF32(Math.Sqrt(betaStart), Math.Sqrt(betaEnd), steps);
        return new NoiseSchedule(roots.Select(r => r * r).ToArray());
    }

    /// <summary>
    /// diffusers' "squaredcos_cap_v2" schedule (GLIDE's cosine, <c>betas_for_alpha_bar</c>): with
    /// ᾱ(s) = cos²((s + 0.008) / 1.008 · π/2), β_i = min(1 − ᾱ((i + 1)/steps) / ᾱ(i/steps), <paramref name="maxBeta"/>)
    /// in double precision (Python floats), stored as float32.
    /// </summary>
    public static NoiseSchedule SquaredCosCapV2(int steps = 1000, double maxBeta = 0.999)
    {
        if (steps < 2 || !(maxBeta > 0 && maxBeta < 1))
            throw new ArgumentException($"A squaredcos_cap_v2 schedule needs >= 2 steps and 0 < max_beta < 1, got {steps}, {maxBeta}.");
        static double AlphaBar(double s) => Math.Pow(Math.Cos((s + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[steps];
        for (int i = 0; i < steps; i++)
        {
            double t1 = (double)i / steps, t2 = (double)(i + 1) / steps;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), maxBeta);
        }
        return new NoiseSchedule(betas);
    }

    private static void CheckRange(string name, int steps, double betaStart, double betaEnd)
    {
        if (steps < 2 || !(betaStart > 0) || !(betaEnd < 1) || !(betaStart <= betaEnd))
            throw new ArgumentException($"A {name} schedule needs >= 2 steps and 0 < beta_start <= beta_end < 1, got {steps}, {betaStart}, {betaEnd}.");
    }

    /// <summary>torch.linspace(start, end, steps) in float32: start + i·step for the first half, end − (steps−1−i)·step for the rest.</summary>
    private static float[] LinspaceF32(double startValue, double endValue, int steps)
    {
        float start = (float)startValue, end = (float)endValue, step = (end - start) / (steps - 1);
        var r = new float[steps];
        for (int i = 0; i < steps; i++) r[i] = i < steps / 2 ? start + i * step : end - (steps - 1 - i) * step;
        return r;
    }

    public IReadOnlyList<float> Betas => _betas;
    /// <summary>ᾱ_t = Π_{s ≤ t} (1 − β_s).</summary>
    public IReadOnlyList<float> AlphasCumprod => _alphasCumprod;
    public int Steps => _alphasCumprod.Length;

    /// <summary>x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε for each sample of a batch (<paramref name="timesteps"/> one per sample, row-major samples of equal size).</summary>
    public float[] AddNoise(ReadOnlySpan<float> x0, ReadOnlySpan<float> noise, IReadOnlyList<long> timesteps)
    {
        if (x0.Length != noise.Length || timesteps.Count == 0 || x0.Length % timesteps.Count != 0)
            throw new ArgumentException($"{x0.Length} sample values, {noise.Length} noise values and {timesteps.Count} timesteps do not make a batch.");
        int per = x0.Length / timesteps.Count;
        var xt = new float[x0.Length];
        for (int b = 0; b < timesteps.Count; b++)
            AddNoise(x0.Slice(b * per, per), noise.Slice(b * per, per), timesteps[b], xt.AsSpan(b * per, per));
        return xt;
    }

    /// <summary>x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε of one sample at timestep <paramref name="t"/>, into <paramref name="xt"/>.</summary>
    public void AddNoise(ReadOnlySpan<float> x0, ReadOnlySpan<float> noise, long t, Span<float> xt)
    {
        if (t < 0 || t >= Steps) throw new ArgumentOutOfRangeException(nameof(t), t, $"Timesteps are in [0, {Steps}).");
        if (noise.Length != x0.Length || xt.Length != x0.Length) throw new ArgumentException($"{x0.Length} sample values, {noise.Length} noise values and {xt.Length} outputs differ.");
        float a = MathF.Sqrt(_alphasCumprod[t]), s = MathF.Sqrt(1f - _alphasCumprod[t]);
        for (int i = 0; i < x0.Length; i++) xt[i] = a * x0[i] + s * noise[i];
    }
}
