namespace Optimum.Core.Diffusion;

/// <summary>
/// The DDPM noise schedule as diffusers' DDPMScheduler builds it (float32 like torch): betas, alphas = 1 − betas and
/// their running product ᾱ_t, and the forward process q(x_t | x_0) = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε (<c>add_noise</c>).
/// </summary>
public sealed class NoiseSchedule
{
    private readonly float[] _alphasCumprod;

    private NoiseSchedule(float[] betas)
    {
        Betas = betas;
        _alphasCumprod = new float[betas.Length];
        double product = 1;                                                              // torch's CPU cumprod accumulates float in double
        for (int t = 0; t < betas.Length; t++) _alphasCumprod[t] = (float)(product *= 1f - betas[t]);
    }

    /// <summary>diffusers' "linear" schedule: <paramref name="steps"/> betas evenly spaced from <paramref name="betaStart"/> to <paramref name="betaEnd"/> (torch.linspace in float32).</summary>
    public static NoiseSchedule Linear(int steps = 1000, double betaStart = 1e-4, double betaEnd = 0.02)
    {
        if (steps < 2 || betaStart <= 0 || betaEnd >= 1 || betaStart > betaEnd)
            throw new ArgumentException($"A linear schedule needs >= 2 steps and 0 < beta_start <= beta_end < 1, got {steps}, {betaStart}, {betaEnd}.");
        // torch.linspace(start, end, steps) in float32: start + i·step for the first half, end − (steps−1−i)·step for the rest.
        float start = (float)betaStart, end = (float)betaEnd, step = (end - start) / (steps - 1);
        var betas = new float[steps];
        for (int i = 0; i < steps; i++) betas[i] = i < steps / 2 ? start + i * step : end - (steps - 1 - i) * step;
        return new NoiseSchedule(betas);
    }

    public IReadOnlyList<float> Betas { get; }
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
        {
            long t = timesteps[b];
            if (t < 0 || t >= Steps) throw new ArgumentOutOfRangeException(nameof(timesteps), t, $"Timesteps are in [0, {Steps}).");
            float a = MathF.Sqrt(_alphasCumprod[t]), s = MathF.Sqrt(1f - _alphasCumprod[t]);
            for (int i = b * per; i < (b + 1) * per; i++) xt[i] = a * x0[i] + s * noise[i];
        }
        return xt;
    }
}
