using System.Numerics;
using System.Runtime.InteropServices;

namespace Optimum.Training;

/// <summary>Vectorised loops over float spans (the optimizer's and the clipper's inner loops).</summary>
public static class VectorMath
{
    /// <summary>Σ x² accumulated in double per vector chunk.</summary>
    public static double SumSquares(ReadOnlySpan<float> x)
    {
        double total = 0;
        var vx = MemoryMarshal.Cast<float, Vector<float>>(x);
        const int Block = 4096;
        for (int start = 0; start < vx.Length; start += Block)
        {
            var acc = Vector<float>.Zero;
            int end = Math.Min(vx.Length, start + Block);
            for (int i = start; i < end; i++) acc += vx[i] * vx[i];
            total += Vector.Sum(acc);
        }
        for (int i = vx.Length * Vector<float>.Count; i < x.Length; i++) total += (double)x[i] * x[i];
        return total;
    }

    /// <summary>x *= a.</summary>
    public static void Scale(Span<float> x, float a)
    {
        var vx = MemoryMarshal.Cast<float, Vector<float>>(x);
        var va = new Vector<float>(a);
        for (int i = 0; i < vx.Length; i++) vx[i] *= va;
        for (int i = vx.Length * Vector<float>.Count; i < x.Length; i++) x[i] *= a;
    }

    /// <summary>y += x.</summary>
    public static void Add(Span<float> y, ReadOnlySpan<float> x)
    {
        var vy = MemoryMarshal.Cast<float, Vector<float>>(y);
        var vx = MemoryMarshal.Cast<float, Vector<float>>(x);
        for (int i = 0; i < vy.Length; i++) vy[i] += vx[i];
        for (int i = vy.Length * Vector<float>.Count; i < y.Length; i++) y[i] += x[i];
    }

    /// <summary>True when every element is finite.</summary>
    public static bool AllFinite(ReadOnlySpan<float> x)
    {
        foreach (var v in x) if (!float.IsFinite(v)) return false;
        return true;
    }
}
