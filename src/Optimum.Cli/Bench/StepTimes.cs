using Optimum.Core;
using System.Diagnostics;

namespace Optimum.Cli;

/// <summary>
/// Seconds of each measured step of a bench loop, split into the phases a step was given as
/// (e.g. forward + backward, then the optimizer). Warm-up steps run but are not kept: ORT plans
/// and allocates its memory during the first runs.
/// </summary>
public sealed class StepTimes
{
    private readonly double[][] _phases;        // [phase][measured step]

    private StepTimes(int warmup, double[][] phases)
    {
        Warmup = warmup;
        _phases = phases;
        Seconds = Enumerable.Range(0, phases[0].Length).Select(s => phases.Sum(p => p[s])).ToArray();
    }

    public int Warmup { get; }
    public int Steps => Seconds.Count;
    /// <summary>Seconds of each measured step, all phases together.</summary>
    public IReadOnlyList<double> Seconds { get; }
    public double Mean => Seconds.Average();
    public double Median => Quantile(Seconds, 0.5);
    /// <summary>Mean seconds per measured step spent in phase <paramref name="phase"/>.</summary>
    public double PhaseMean(int phase) => _phases[phase].Average();

    /// <summary>
    /// Runs <paramref name="warmup"/> + <paramref name="steps"/> steps; step i (0-based, warm-up
    /// included) calls each phase with i in order, timing each on its own.
    /// </summary>
    public static StepTimes Measure(int warmup, int steps, params Action<int>[] phases)
    {
        CheckCounts(warmup, steps);
        if (phases.Length == 0) throw new ArgumentException("A step needs at least one phase.", nameof(phases));
        var seconds = phases.Select(_ => new double[steps]).ToArray();
        for (int i = 0; i < warmup + steps; i++)
            for (int p = 0; p < phases.Length; p++)
            {
                var t = Stopwatch.GetTimestamp();
                phases[p](i);
                if (i >= warmup) seconds[p][i - warmup] = Stopwatch.GetElapsedTime(t).TotalSeconds;
            }
        return new StepTimes(warmup, seconds);
    }

    /// <summary>Step times measured by someone else's loop (a trainer's history, warm-up steps first); keeps those after the warm-up.</summary>
    public static StepTimes FromHistory(int warmup, IReadOnlyList<double> seconds)
    {
        CheckCounts(warmup, seconds.Count - warmup);
        return new StepTimes(warmup, [seconds.Skip(warmup).ToArray()]);
    }

    /// <summary>Adds <c>{unit}_ms</c> (mean), <c>{unit}_median_ms</c> and the counts to a measurement.</summary>
    public void AddTo(IDictionary<string, object> measurement, string unit = "step")
    {
        measurement[$"{unit}_ms"] = Mean * 1000;
        measurement[$"{unit}_median_ms"] = Median * 1000;
        measurement[$"measured_{unit}s"] = Steps;
        measurement[$"warmup_{unit}s"] = Warmup;
    }

    /// <summary>Quantile q in [0, 1], interpolating linearly between order statistics (numpy's default); NaN for no values.</summary>
    public static double Quantile(IEnumerable<double> values, double q)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0) return double.NaN;
        double h = q * (v.Length - 1);
        int lo = (int)Math.Floor(h), hi = Math.Min(lo + 1, v.Length - 1);
        return v[lo] + (h - lo) * (v[hi] - v[lo]);
    }

    private static void CheckCounts(int warmup, int steps)
    {
        if (warmup < 0) throw new ArgumentOutOfRangeException(nameof(warmup), warmup, "--warmup must be >= 0.");
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "--steps must be >= 1.");
    }
}
