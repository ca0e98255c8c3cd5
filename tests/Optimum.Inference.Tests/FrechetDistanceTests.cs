using MathNet.Numerics.LinearAlgebra;
using Optimum.Inference.Diffusion;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

public sealed class FrechetDistanceTests
{
    /// <summary>Σ₁ = Q D₁ Qᵀ and Σ₂ = Q D₂ Qᵀ share eigenvectors: the distance is ‖Δμ‖² + Σ(√d₁ − √d₂)².</summary>
    [Fact]
    public void CommutingCovariances_MatchTheClosedForm()
    {
        var rng = new Random(1);
        const int n = 12;
        var q = Matrix<double>.Build.Dense(n, n, (_, _) => Rand.Normal(rng)).QR().Q;
        var d1 = Enumerable.Range(0, n).Select(_ => 0.1 + 3 * rng.NextDouble()).ToArray();
        var d2 = Enumerable.Range(0, n).Select(_ => 0.1 + 3 * rng.NextDouble()).ToArray();
        var s1 = q * Matrix<double>.Build.DiagonalOfDiagonalArray(d1) * q.Transpose();
        var s2 = q * Matrix<double>.Build.DiagonalOfDiagonalArray(d2) * q.Transpose();
        var m1 = Enumerable.Range(0, n).Select(_ => Rand.Normal(rng)).ToArray();
        var m2 = Enumerable.Range(0, n).Select(_ => Rand.Normal(rng)).ToArray();
        double expected = m1.Zip(m2, (a, b) => (a - b) * (a - b)).Sum() + d1.Zip(d2, (a, b) => (Math.Sqrt(a) - Math.Sqrt(b)) * (Math.Sqrt(a) - Math.Sqrt(b))).Sum();
        Assert.Equal(expected, FrechetDistance.Between(m1, s1.ToArray(), m2, s2.ToArray()), 9);
        Assert.Equal(0, FrechetDistance.Between(m1, s1.ToArray(), m1, s1.ToArray()), 9);
    }

    /// <summary>Sample statistics are numpy's (mean, cov with n − 1); two samples of one Gaussian are close, a shifted one is not.</summary>
    [Fact]
    public void Samples_StatisticsAndDistance()
    {
        var (mean, cov) = FrechetDistance.Statistics([1f, 2f, 3f, 6f, 5f, 10f], 3, 2);
        Assert.Equal([3.0, 6.0], mean);
        Assert.Equal(4.0, cov[0, 0], 12);                                                 // ((−2)² + 0² + 2²) / 2
        Assert.Equal(8.0, cov[0, 1], 12);                                                 // ((−2)(−4) + 0 + 2·4) / 2
        Assert.Equal(16.0, cov[1, 1], 12);

        var rng = new Random(2);
        float[] Draw(int count, double shift) => Enumerable.Range(0, count * 4).Select(_ => (float)(Rand.Normal(rng) + shift)).ToArray();
        double same = FrechetDistance.Between(Draw(4000, 0), 4000, Draw(4000, 0), 4000, 4);
        double shifted = FrechetDistance.Between(Draw(4000, 0), 4000, Draw(4000, 1), 4000, 4);
        Assert.True(same < 0.02, $"two samples of N(0, I): {same:F4}");
        Assert.InRange(shifted, 3.7, 4.3);                                                // ‖(1, 1, 1, 1)‖², sd of the estimate ≈ 0.09
        Assert.Throws<ArgumentException>(() => FrechetDistance.Between([1f, 2f], 1, [1f, 2f], 1, 2));
    }
}
