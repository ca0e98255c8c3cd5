using Optimum.Core.Diffusion;

namespace Optimum.Inference.Diffusion;

/// <summary>
/// Deterministic DDIM sampling (eta 0) as diffusers' DDIMScheduler.step does it for epsilon-predicting models:
/// x̂₀ = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t, clipped to [−1, 1] (clip_sample), then
/// x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε with the model's own ε; after the last step ᾱ_prev = 1 (set_alpha_to_one).
/// </summary>
public static class Ddim
{
    /// <summary>
    /// diffusers' "leading" spacing: <paramref name="steps"/> timesteps k·(T / steps) for k = steps − 1 … 0
    /// (10 of 1,000: 900, 800, …, 0).
    /// </summary>
    public static long[] Timesteps(int trainSteps, int steps)
    {
        if (steps < 1 || steps > trainSteps) throw new ArgumentOutOfRangeException(nameof(steps), steps, $"DDIM takes 1..{trainSteps} steps.");
        long ratio = trainSteps / steps;
        return Enumerable.Range(0, steps).Select(k => (long)(steps - 1 - k) * ratio).ToArray();
    }

    /// <summary>One step from timestep <paramref name="t"/> to <paramref name="previous"/> (−1 after the last) given the predicted noise; returns x_prev.</summary>
    public static float[] Step(NoiseSchedule schedule, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, long t, long previous, bool clipSample = true)
    {
        if (x.Length != eps.Length) throw new ArgumentException($"{x.Length} sample values but {eps.Length} noise values.");
        float a = schedule.AlphasCumprod[(int)t], aPrev = previous >= 0 ? schedule.AlphasCumprod[(int)previous] : 1f;
        float sa = MathF.Sqrt(a), s1a = MathF.Sqrt(1f - a), saPrev = MathF.Sqrt(aPrev), dir = MathF.Sqrt(1f - aPrev);
        var result = new float[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            float x0 = (x[i] - s1a * eps[i]) / sa;
            if (clipSample) x0 = Math.Clamp(x0, -1f, 1f);
            result[i] = saPrev * x0 + dir * eps[i];
        }
        return result;
    }

    /// <summary>
    /// Samples from <paramref name="xT"/> through <paramref name="timesteps"/> (descending), calling
    /// <paramref name="predictNoise"/>(x, t) once per step; <paramref name="progress"/> gets the step index.
    /// </summary>
    public static float[] Sample(NoiseSchedule schedule, float[] xT, IReadOnlyList<long> timesteps, Func<float[], long, float[]> predictNoise,
        Action<int>? progress = null, CancellationToken cancel = default)
    {
        var x = xT;
        for (int k = 0; k < timesteps.Count; k++)
        {
            cancel.ThrowIfCancellationRequested();
            long t = timesteps[k], previous = k + 1 < timesteps.Count ? timesteps[k + 1] : -1;
            x = Step(schedule, x, predictNoise(x, t), t, previous);
            progress?.Invoke(k);
        }
        return x;
    }
}
