using Optimum.Core.Diffusion;

namespace Optimum.Inference.Diffusion;

/// <summary>
/// Deterministic DDIM sampling (eta 0, set_alpha_to_one) over a bare <see cref="NoiseSchedule"/>, for callers without a
/// scheduler_config.json: the same update as <see cref="DdimScheduler"/>, which adds eta, clip_sample_range,
/// set_alpha_to_one and steps_offset from a <see cref="SchedulerConfig"/>.
/// </summary>
public static class Ddim
{
    /// <summary>
    /// diffusers' "leading" spacing: <paramref name="steps"/> timesteps k·(T / steps) for k = steps − 1 … 0
    /// (10 of 1,000: 900, 800, …, 0).
    /// </summary>
    public static long[] Timesteps(int trainSteps, int steps) => DiffusionScheduler.LeadingTimesteps(trainSteps, steps);

    /// <summary>One eta-0 step from timestep <paramref name="t"/> to <paramref name="previous"/> (−1 after the last: ᾱ_prev = 1) given the predicted noise; returns x_prev.</summary>
    public static float[] Step(NoiseSchedule schedule, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, long t, long previous, bool clipSample = true)
    {
        if (x.Length != eps.Length) throw new ArgumentException($"{x.Length} sample values but {eps.Length} noise values.");
        float a = schedule.AlphasCumprod[(int)t], aPrev = previous >= 0 ? schedule.AlphasCumprod[(int)previous] : 1f;
        var result = new float[x.Length];
        DdimScheduler.Update(x, eps, default, result, a, aPrev, 0f, clipSample ? 1f : null);
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
