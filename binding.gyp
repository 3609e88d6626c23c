{
  # The CPU-only addon that `npm install` builds when no prebuilt binary fits. The
  # primary build (with the CUDA backend) is CMakeLists.txt; both read sources.json.
  "targets": [
    {
      "target_name": "kvcompact",
      "sources": ["<!@(node scripts/sources.cjs core cpu binding cudaStub)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "cpp/include"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      # RTTI on: a backend recognises its own CompactionFit (dynamic_cast).
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=c++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-fexceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_ENABLE_CPP_RTTI": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1, "RuntimeTypeInfo": "true", "AdditionalOptions": ["/std:c++17"] } },
      "conditions": [["OS=='linux'", { "libraries": ["-lpthread"] }]]
    }
  ]
}
