using Optimum.Hub;
using Xunit;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>Finite-difference checks of a whole model's gradients on sampled elements of every parameter (double precision).</summary>
internal static class SampledGradCheck
{
    /// <summary>
    /// For <paramref name="perTensor"/> random elements of each parameter, compares the analytic
    /// gradient with the central difference of <paramref name="loss"/> (which reads <paramref name="w"/>):
    /// eps 1e-6, |analytic - fd| ≤ 1e-7 + 1e-5 |fd|. Returns the largest error and the elements checked.
    /// </summary>
    public static (double MaxAbs, int Checked) Run(IReadOnlyList<ParameterInfo> ps, double[][] w, IReadOnlyDictionary<string, double[]> analytic,
        Func<double> loss, int perTensor, Random rng) => Check(ps, w, analytic, loss, perTensor, rng, eps: 1e-6, atol: 1e-7, rtol: 1e-5);

    /// <summary>
    /// As <see cref="Run"/> for a float32 graph: eps 3e-3 (float rounding of the loss, ~1e-7 relative, would
    /// swamp a smaller step), |analytic - fd| ≤ 2e-3 + 3e-2 |fd|.
    /// </summary>
    public static (double MaxAbs, int Checked) RunFloat(IReadOnlyList<ParameterInfo> ps, double[][] w, IReadOnlyDictionary<string, double[]> analytic,
        Func<double> loss, int perTensor, Random rng) => Check(ps, w, analytic, loss, perTensor, rng, eps: 3e-3, atol: 2e-3, rtol: 3e-2);

    /// <summary>
    /// Directional derivatives for a float32 graph too large to step element by element: for each parameter, along two
    /// directions d with entries of rms 1, random signs and the analytic gradient itself, the central difference
    /// (loss(w + h·d) − loss(w − h·d)) / 2h against analytic·d. A wrong gradient passes the first only if its error is
    /// nearly orthogonal to a random sign vector, the second only if its error is orthogonal to the wrong gradient.
    /// The step h moves every element by at most 1e-3 and changes the loss by about 1e-3 of itself to first order
    /// (h = min(1e-3, 1e-3·|loss| / |analytic·d|)): large enough that float rounding of the loss (~1e-7 of it) stays
    /// near 1e-4 of the change, small enough that the curvature along d does not show.
    /// |analytic·d − fd| ≤ 1e-4 + 1e-2·max(|fd|, |analytic|₂), |analytic|₂ being the typical size of analytic·d for
    /// random signs. Returns the largest error as a fraction of its tolerance, and the derivatives checked.
    /// </summary>
    public static (double MaxOverTolerance, int Checked) RunDirectionalFloat(IReadOnlyList<ParameterInfo> ps, double[][] w,
        IReadOnlyDictionary<string, double[]> analytic, Func<double> loss, Random rng)
    {
        const double maxStep = 1e-3, change = 1e-3, atol = 1e-4, rtol = 1e-2;
        double l0 = Math.Abs(loss()), worst = 0;
        int n = 0;
        for (int i = 0; i < ps.Count; i++)
        {
            var grad = analytic["grad." + ps[i].Name];
            var keep = w[i].ToArray();
            double norm = Math.Sqrt(grad.Sum(v => v * v)), rms = norm / Math.Sqrt(grad.Length);
            var directions = new List<(string Name, double[] D)> { ("random signs", grad.Select(_ => rng.Next(2) == 0 ? -1.0 : 1.0).ToArray()) };
            if (rms > 0) directions.Add(("the gradient", grad.Select(v => v / rms).ToArray()));
            foreach (var (what, d) in directions)
            {
                double dot = grad.Zip(d, (a, b) => a * b).Sum(), h = Math.Min(maxStep, change * l0 / Math.Abs(dot));
                for (int k = 0; k < d.Length; k++) w[i][k] = keep[k] + h * d[k];
                var plus = loss();
                for (int k = 0; k < d.Length; k++) w[i][k] = keep[k] - h * d[k];
                var minus = loss();
                keep.CopyTo(w[i], 0);
                double fd = (plus - minus) / (2 * h), tolerance = atol + rtol * Math.Max(Math.Abs(fd), norm), err = Math.Abs(dot - fd);
                worst = Math.Max(worst, err / tolerance);
                Assert.True(err <= tolerance, $"{ps[i].Name} along {what}: analytic {dot:E6} vs finite difference {fd:E6} with step {h:E2} (|diff| {err:E2} > {tolerance:E2})");
                n++;
            }
        }
        return (worst, n);
    }

    private static (double MaxAbs, int Checked) Check(IReadOnlyList<ParameterInfo> ps, double[][] w, IReadOnlyDictionary<string, double[]> analytic,
        Func<double> loss, int perTensor, Random rng, double eps, double atol, double rtol)
    {
        double maxAbs = 0;
        int n = 0;
        for (int i = 0; i < ps.Count; i++)
        {
            var grad = analytic["grad." + ps[i].Name];
            foreach (var k in Enumerable.Range(0, perTensor).Select(_ => rng.Next(w[i].Length)).Distinct())
            {
                var keep = w[i][k];
                w[i][k] = keep + eps; var plus = loss();
                w[i][k] = keep - eps; var minus = loss();
                w[i][k] = keep;
                double fd = (plus - minus) / (2 * eps), err = Math.Abs(grad[k] - fd);
                maxAbs = Math.Max(maxAbs, err);
                Assert.True(err <= atol + rtol * Math.Abs(fd), $"{ps[i].Name}[{k}]: analytic {grad[k]:E6} vs finite difference {fd:E6}");
                n++;
            }
        }
        return (maxAbs, n);
    }
}
