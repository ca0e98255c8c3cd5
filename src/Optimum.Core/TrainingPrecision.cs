namespace Optimum.Core;

/// <summary>
/// What a training run's matrix products compute in (<c>--precision</c>). Parameters, gradients and optimizer state are
/// float32 (master weights) in every case.
/// </summary>
public enum TrainingPrecision
{
    /// <summary>Float32 throughout; on CUDA, TF32 tensor cores are switched off (PyTorch's default for matmul).</summary>
    Fp32,
    /// <summary>Float32 graphs whose MatMul/Gemm/Conv may use TF32 tensor cores (CUDA provider option use_tf32); the same as fp32 on the CPU, which has no TF32.</summary>
    Tf32,
    /// <summary>MatMul and Gemm in bfloat16 (casts placed by the graph builder, torch.autocast's rule); softmax, norms and the loss in float32.</summary>
    Bf16,
    /// <summary>As <see cref="Bf16"/> in float16, with dynamic loss scaling (torch.amp.GradScaler's): an overflowed step is skipped and the scale lowered.</summary>
    Fp16,
}

public static class TrainingPrecisions
{
    /// <summary>True for the precisions whose graphs compute in a 16-bit type (built with autocast casts).</summary>
    public static bool IsMixed(this TrainingPrecision p) => p is TrainingPrecision.Bf16 or TrainingPrecision.Fp16;

    /// <summary>Refuses a precision <paramref name="device"/> cannot train in: bf16 on the CPU, whose ONNX Runtime provider has no bfloat16 MatMul or Gemm.</summary>
    public static void CheckDevice(this TrainingPrecision p, ExecutionDevice device)
    {
        if (p == TrainingPrecision.Bf16 && !device.IsCuda)
            throw new ArgumentException("--precision bf16 needs --device cuda: ONNX Runtime's CPU provider has no bfloat16 MatMul or Gemm kernel. On the CPU train in fp32 or fp16.");
    }
}
