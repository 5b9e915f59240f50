# Warnings are errors on belay's own code (not on generated or third-party code).
function(belay_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
      -Wold-style-cast -Wcast-align -Woverloaded-virtual
      -Wimplicit-fallthrough -Werror>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:Clang>>:-Wthread-safety>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings --Werror=cross-execution-space-call>)
endfunction()
