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
