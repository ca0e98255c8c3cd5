using MathNet.Numerics.LinearAlgebra;

namespace Optimum.Inference.Diffusion;

/// <summary>
/// The Fréchet distance between two Gaussians fitted to feature vectors (the FID when the features are an Inception
/// network's): ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), with Tr (Σ₁Σ₂)^½ computed as the sum of the square roots of the
/// eigenvalues of the symmetric Σ₁^½ Σ₂ Σ₁^½ (which has the same spectrum), in double precision.
/// </summary>
public static class FrechetDistance
{
    /// <summary>Mean and sample covariance (divided by n − 1, as numpy.cov) of <paramref name="count"/> row-major feature vectors of size <paramref name="dim"/>.</summary>
    public static (double[] Mean, double[,] Covariance) Statistics(ReadOnlySpan<float> features, int count, int dim)
    {
        if (count < 2 || dim < 1 || features.Length != (long)count * dim)
            throw new ArgumentException($"{features.Length} values are not {count} (>= 2) feature vectors of {dim}.");
        var mean = new double[dim];
        for (int i = 0; i < count; i++)
            for (int d = 0; d < dim; d++) mean[d] += features[i * dim + d];
        for (int d = 0; d < dim; d++) mean[d] /= count;
        var x = Matrix<double>.Build.Dense(count, dim);
        for (int i = 0; i < count; i++)
            for (int d = 0; d < dim; d++) x[i, d] = features[i * dim + d] - mean[d];
        var cov = x.TransposeThisAndMultiply(x) / (count - 1);
        return (mean, cov.ToArray());
    }

    /// <summary>The distance between the Gaussians fitted to two sets of feature vectors.</summary>
    public static double Between(ReadOnlySpan<float> a, int countA, ReadOnlySpan<float> b, int countB, int dim)
    {
        var (m1, c1) = Statistics(a, countA, dim);
        var (m2, c2) = Statistics(b, countB, dim);
        return Between(m1, c1, m2, c2);
    }

    /// <summary>The distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).</summary>
    public static double Between(double[] mean1, double[,] cov1, double[] mean2, double[,] cov2)
    {
        int n = mean1.Length;
        if (mean2.Length != n || cov1.GetLength(0) != n || cov1.GetLength(1) != n || cov2.GetLength(0) != n || cov2.GetLength(1) != n)
            throw new ArgumentException($"Means and covariances must all be of dimension {n}.");
        var s1 = Matrix<double>.Build.DenseOfArray(cov1);
        var s2 = Matrix<double>.Build.DenseOfArray(cov2);
        double dm = 0;
        for (int i = 0; i < n; i++) dm += (mean1[i] - mean2[i]) * (mean1[i] - mean2[i]);
        var root1 = SymmetricSqrt(s1);
        var inner = root1 * s2 * root1;
        var evd = ((inner + inner.Transpose()) / 2).Evd(Symmetricity.Symmetric);
        double traceRoot = evd.EigenValues.Sum(l => Math.Sqrt(Math.Max(0, l.Real)));
        return dm + s1.Trace() + s2.Trace() - 2 * traceRoot;
    }

    /// <summary>The PSD square root of a symmetric matrix (negative eigenvalues from rounding clamp to 0).</summary>
    private static Matrix<double> SymmetricSqrt(Matrix<double> m)
    {
        var evd = ((m + m.Transpose()) / 2).Evd(Symmetricity.Symmetric);
        var d = Matrix<double>.Build.DiagonalOfDiagonalVector(evd.EigenValues.Map(l => Math.Sqrt(Math.Max(0, l.Real))));
        return evd.EigenVectors * d * evd.EigenVectors.Transpose();
    }
}
