namespace Optimum.Models;

/// <summary>diffusers' sinusoidal timestep embedding (<c>get_timestep_embedding</c>), the input of a UNet's time MLP.</summary>
public static class TimestepEmbedding
{
    /// <summary>
    /// timesteps (B) int64 → (B, <paramref name="dim"/>): with half = dim / 2 and freq_k = exp(−ln(10000)·k / (half −
    /// <paramref name="freqShift"/>)), [sin(t·freq), cos(t·freq)], or [cos, sin] when <paramref name="flipSinToCos"/>.
    /// The frequencies are computed in float32 as torch does and stored as a constant.
    /// </summary>
    public static Value Sinusoidal(GraphBuilder g, Value timesteps, int dim, bool flipSinToCos, int freqShift, DType dtype = DType.Float)
    {
        if (dim < 2 || dim % 2 != 0 || dim / 2 <= freqShift)
            throw new GraphBuildException($"A sinusoidal timestep embedding needs an even dim above 2·freq_shift, got dim {dim}, freq_shift {freqShift}");
        int half = dim / 2;
        var freqs = Enumerable.Range(0, half).Select(k => (double)MathF.Exp(-(float)Math.Log(10000) * k / (half - freqShift))).ToArray();
        var angles = g.Unsqueeze(g.Cast(timesteps, dtype), 1) * g.Constant(TensorData.FromNumbers(dtype, freqs, 1, half));   // (B, half)
        var (sin, cos) = (g.Sin(angles), g.Cos(angles));
        return flipSinToCos ? g.Concat(-1, cos, sin) : g.Concat(-1, sin, cos);                                               // (B, dim)
    }
}
